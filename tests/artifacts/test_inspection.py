"""`mmesid inspect` of a finetune run folder and of a JSON report shows their figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmesid_cli.artifacts.inspection import describe
from mmesid_cli.artifacts.reports import write_report
from mmesid_cli.artifacts.runs import write_run_config
from tests.conftest import run_cli


def _run(folder: Path, *, best: float | None = 0.0312) -> Path:
    folder.mkdir()
    write_run_config(
        folder / "config.json",
        {
            "model": {
                "backbone": "SmolLM2-135M",
                "modalities": ["collab", "text"],
                "sid_init": "codebook",
                "fusion": True,
                "objective": "all-positions",
                "head": "calibrated",
                "lora_targets": ["gate_proj"],
            },
            "training": {"batch_size": 16, "eval_users": 1000},
            "summary": {
                "steps": 750,
                "planned_steps": 750,
                "stopped_by": "steps",
                "labels": 69171,
                # as finetune writes them: every metric of a validation pass
                "valid_before": {"HR@10": 0.02, "NDCG@10": 0.0095},
                "valid_best": None if best is None else {"HR@10": 0.06, "NDCG@10": best},
                "best_step": 600,
                "valid_last": {"HR@10": 0.055, "NDCG@10": 0.0300},
                "valid_users": 1000,
                "valid_metric": "NDCG@10",
            },
        },
    )
    (folder / "train_log.jsonl").write_text('{"step": 1, "loss": 9.4}\n')
    (folder / "heads.safetensors").write_bytes(b"x" * 2048)
    return folder


def test_run_folder_shows_what_a_user_asks(tmp_path: Path, capsys) -> None:
    run = _run(tmp_path / "run")
    text = dict(describe(run).rows)
    assert text["backbone"] == "SmolLM2-135M"
    assert text["modalities"] == "collab, text"
    assert text["objective"] == "all-positions"
    assert text["steps"].startswith("750 of 750 planned, batch 16")
    assert text["labels seen"] == "69,171"
    assert text["validation NDCG@10 best"] == "0.0312 at step 600 (1,000 users)"
    assert text["validation NDCG@10 before"] == "0.0095"
    assert text["validation NDCG@10 last"] == "0.0300"
    files = describe(run).tables[0]
    assert [row[0] for row in files.rows] == ["config.json", "heads.safetensors", "train_log.jsonl"]
    assert files.rows[1][1] == "2.0 KiB"
    # the folder and its config.json describe the same run, on the terminal too
    assert describe(run / "config.json").rows == describe(run).rows
    assert run_cli("inspect", run) == 0
    out = capsys.readouterr().out
    assert "validation NDCG@10 best" in out and "heads.safetensors" in out


def test_run_without_validation_says_so(tmp_path: Path) -> None:
    run = _run(tmp_path / "run", best=None)
    assert dict(describe(run).rows)["validation NDCG@10"] == "none (trained without validation)"


def test_a_folder_that_is_not_a_run(tmp_path: Path, capsys) -> None:
    assert run_cli("inspect", tmp_path) == 2
    assert "not a `mmesid finetune` run" in capsys.readouterr().err


def test_evaluate_report_is_a_metrics_table(tmp_path: Path, capsys) -> None:
    metrics = {"HR@5": 0.06, "NDCG@5": 0.0338, "HR@10": 0.1033, "NDCG@10": 0.0475}
    stderr = {k: v / 10 for k, v in metrics.items()}
    path = tmp_path / "eval.json"
    write_report(
        path,
        "evaluate",
        {"model": "m", "metrics": metrics, "stderr": stderr, "protocol": {"users": 300}},
    )
    description = describe(path)
    (table,) = description.tables
    assert table.header == ["K", "HR@K", "NDCG@K"]
    assert table.rows == [
        ["5", "0.0600 ± 0.0060", "0.0338 ± 0.0034"],
        ["10", "0.1033 ± 0.0103", "0.0475 ± 0.0047"],
    ]
    assert ("protocol.users", "300") in description.rows
    assert run_cli("inspect", path) == 0
    out = capsys.readouterr().out
    assert "0.0475 ± 0.0047" in out
    assert "{" not in out  # no JSON fragments


@pytest.mark.parametrize("kind", ["concordance", "collapse"])
def test_report_rows_become_a_table(tmp_path: Path, kind: str) -> None:
    rows = (
        [
            {
                "space": "mmd",
                "modality": "text",
                "level": 4,
                "tau_a": {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6},
            }
        ]
        if kind == "concordance"
        else [{"matrix": "e.h5:collab", "shape": [10, 4], "rank": 4, "singular_values": [1.0] * 20}]
    )
    path = tmp_path / "r.json"
    write_report(path, kind, {"rows": rows})
    (table,) = describe(path).tables
    if kind == "concordance":
        assert table.rows[0][:3] == ["mmd", "text", "4"]
        assert "0.5000 [0.4000, 0.6000]" in table.rows[0]
    else:
        assert table.rows[0][:3] == ["e.h5:collab", "10 × 4", "4"]
