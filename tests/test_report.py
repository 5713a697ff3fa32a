"""``mmesid report``: evaluate, concordance and collapse reports in one document."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmesid_cli.artifacts.reports import write_report
from mmesid_cli.report import build_report, to_markdown
from tests.conftest import run_cli


def _tau(value: float) -> dict[str, float]:
    return {"value": value, "ci_low": value - 0.01, "ci_high": value + 0.01}


EVALUATE = {
    "kind": "evaluate",
    "model": "mmesid (runs/mmesid)",
    "metrics": {"HR@10": 0.25, "NDCG@10": 0.125, "HR@5": 0.2, "NDCG@5": 0.1},
    "stderr": {"NDCG@10": 0.0312},
    "protocol": {"split": "test", "users": 40, "users_eligible": 50, "protocol": "loo",
                 "user_sample": {"size": 40, "seed": 0}},
}  # fmt: skip
CONCORDANCE = {
    "kind": "concordance",
    "settings": {"similarity": "cosine", "target": "test", "min_history": 2},
    "rows": [
        {"space": "mmd", "modality": "text", "level": 1, "cases": 9, "tau_a": _tau(0.9)},
        {"space": "mmd", "modality": "text", "level": 3, "cases": 9, "tau_a": _tau(0.4)},
        {"space": "mine", "modality": "text", "level": 2, "cases": 9, "tau_a": _tau(0.3)},
    ],
}
COLLAPSE = {
    "kind": "collapse",
    "definitions": {"effective_rank": "exp(H)", "rank": "σ > tol"},
    "rows": [
        {"matrix": "e4srec:tokens", "shape": [100, 576], "rank": 65, "effective_rank": 20.04,
         "energy_dims": {"0.90": 7, "0.99": 30}},
    ],
}  # fmt: skip


def test_sections_take_full_depth_and_paper_figures_by_label() -> None:
    sections = build_report(
        [("e.json", EVALUATE), ("c.json", CONCORDANCE), ("k.json", COLLAPSE)], [5, 10], "beauty"
    )
    ranking, order, collapse = sections
    assert ranking.rows[0][:7] == ["mmesid (runs/mmesid)", "test", "40", "0.2000", "0.2500",
                                   "0.1000", "0.1250"]  # fmt: skip
    assert ranking.rows[0][7] == "0.0312"  # the standard error of NDCG@10
    assert any("40 of 50 eligible users" in note for note in ranking.notes)
    tiger = next(row for row in ranking.rows if "TIGER" in row[0])
    assert tiger[3:7] == ["0.0454", "0.0648", "0.0321", "0.0384"]
    assert tiger[-1] == "beam search over SIDs"
    by_space = {row[0]: row for row in order.rows}
    assert by_space["mmd"][2] == "3" and by_space["mmd"][4].startswith("0.4000 [0.3900, 0.4100]")
    assert by_space["mmd"][6] == "0.4436" and by_space["mine"][6] == "–"
    assert collapse.rows == [["e4srec:tokens", "100 × 576", "65 / 100", "20.0", "7", "30"]]
    markdown = to_markdown(sections, "Beauty")
    assert markdown.startswith("# Beauty\n") and markdown.count("\n## ") == 3
    table = [line for line in markdown.splitlines() if line.startswith("| e4srec:tokens")]
    assert table == ["| e4srec:tokens | 100 × 576 | 65 / 100 | 20.0 | 7 | 30 |"]


def test_only_the_kinds_present_get_a_section() -> None:
    sections = build_report([("k.json", COLLAPSE)], [10])
    assert [s.title.split()[0] for s in sections] == ["Embedding"]
    centred = {**COLLAPSE, "rows": [{**COLLAPSE["rows"][0], "centered": True}]}
    assert build_report([("k.json", centred)], [10])[0].rows[0][0] == "e4srec:tokens (centred)"
    with pytest.raises(ValueError, match="a 'tokenize' report"):
        build_report([("t.json", {"kind": "tokenize"})], [10])


def test_cli_writes_markdown_and_rejects_other_reports(tmp_path: Path, capsys) -> None:
    paths = []
    for name, content in (("e", EVALUATE), ("c", CONCORDANCE), ("k", COLLAPSE)):
        body = {k: v for k, v in content.items() if k != "kind"}
        paths.append(tmp_path / f"{name}.json")
        write_report(paths[-1], content["kind"], body)
    md = tmp_path / "report.md"
    assert run_cli("report", *paths, "--markdown", md, "--published", "beauty") == 0
    text = md.read_text()
    assert "| published: RPG (paper) |" in text and "| mmd | text | 3 | 9 |" in text
    write_report(tmp_path / "t.json", "tokenize", {})
    assert run_cli("report", tmp_path / "t.json", "--markdown", tmp_path / "x.md") == 2
    assert "is a 'tokenize' report" in capsys.readouterr().err
    assert run_cli("report", paths[0], "--published", "toys") == 2
    assert "no figures for 'toys'" in capsys.readouterr().err
    assert not (tmp_path / "x.md").exists()


CURVE = {
    "kind": "curve",
    "runs": [{"label": "mmesid", "objective": "last", "points": [{}, {}],
              "best": {"labels": 32000, "step": 2000, "NDCG@10": 0.031}, "final_loss": 6.5}],
    "baselines": [{"label": "sasrec", "split": "test", "NDCG@10": 0.0469}],
    "notes": ["sasrec: a test-split figure; beside validation curves it shows a level."],
}  # fmt: skip


def test_curve_reports_give_the_best_point_and_the_baselines() -> None:
    (section,) = build_report([("curve.json", CURVE), ("again.json", CURVE)], [10])
    assert section.title.startswith("Learning curves")
    assert section.rows[0] == ["mmesid", "valid", "last", "2", "0.0310", "32,000", "2,000",
                               "6.5000"]  # fmt: skip
    assert section.rows[1] == ["baseline: sasrec", "test", "–", "–", "0.0469", "–", "–", "–"]
    assert len(section.rows) == 4 and section.notes == CURVE["notes"]  # notes once


def test_paper_tau_only_with_published() -> None:
    (order,) = build_report([("c.json", CONCORDANCE)], [10])
    assert "paper" not in " ".join(order.header)
    assert all(len(row) == len(order.header) for row in order.rows)
    assert not any("Paper" in note for note in order.notes)
    (_, order) = build_report([("c.json", CONCORDANCE)], [10], "beauty")
    assert order.header[-1] == "paper tau (Beauty)"


def test_notes_are_words_not_python_dicts() -> None:
    (ranking,) = build_report([("e.json", EVALUATE)], [10])
    assert "40 of 50 eligible users, a seeded sample of 40 users (seed 0)." in ranking.notes
    assert not any("{" in note for note in ranking.notes)


def test_budget_banner_states_the_fraction_of_an_epoch() -> None:
    from mmesid_cli.report import budget_banner, finetune_budget

    config = {"summary": {"steps": 8, "labels": 1055}, "training": {"batch_size": 8}}
    lines = budget_banner([finetune_budget("mmesid", config, 38719)], ["tokeniser: 8 epochs"])
    assert lines[0] == "tokeniser: 8 epochs"
    assert lines[1] == (
        "fine-tuning mmesid: 8 steps × 8 sequences, 1,055 training labels = 0.0272 of an "
        "epoch (38,719 labels); the paper trains 4 epochs"
    )  # 1055 / 38719 = 0.02725
    assert "do not test the paper" in lines[2]
    markdown = to_markdown([], "Demo", lines)
    assert markdown.startswith("# Demo\n\n> **Budget.**\n>\n> - tokeniser: 8 epochs\n")
    # a run of more than one epoch gets its line but no warning
    long = {"summary": {"steps": 9000, "labels": 80000}, "training": {"batch_size": 16}}
    assert len(budget_banner([finetune_budget("long", long, 38719)])) == 1


def test_report_command_opens_with_the_runs_budget(tmp_path: Path) -> None:
    from mmesid_cli.artifacts.runs import write_run_config
    from tests.conftest import write_tiny_dataset

    items, sequences = write_tiny_dataset(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    write_run_config(
        run / "config.json",
        {"summary": {"steps": 2, "labels": 5}, "training": {"batch_size": 4}},
    )
    evaluate = dict(EVALUATE, inputs={"run_dir": str(run), "sequences": str(sequences),
                                      "items": str(items)})  # fmt: skip
    evaluate.pop("kind")
    write_report(tmp_path / "e.json", "evaluate", evaluate)
    out = tmp_path / "r.md"
    assert run_cli("report", tmp_path / "e.json", "--budget", "tokeniser: 1 epoch",
                   "--markdown", out) == 0  # fmt: skip
    text = out.read_text()
    assert "> - tokeniser: 1 epoch\n> - fine-tuning run: 2 steps × 4 sequences, 5 training" in text
