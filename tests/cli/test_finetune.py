"""``mmesid finetune`` end to end on tiny inputs; bad input: exit 2 and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.llm4sr.tiny import tiny_backbone, tiny_files


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return tiny_backbone(tmp_path_factory.mktemp("backbone") / "llama")


def _args(files, run_dir, backbone, *extra):
    return (
        "finetune", "--sequences", files.sequences, "--embeddings", files.embeddings,
        "--tokenizer", files.tokenizer, "--sids", files.sids, "--model", backbone,
        "-o", run_dir, *extra,
    )  # fmt: skip


def test_finetune_writes_a_run(tmp_path, llama, capsys):
    files = tiny_files(tmp_path / "in")
    run_dir = tmp_path / "run"
    code = run_cli(
        *_args(
            files,
            run_dir,
            llama,
            "--max-steps",
            "4",
            "--warmup-steps",
            "1",
            "--eval-every",
            "2",
            "--eval-users",
            "10",
            "--micro-batch-size",
            "8",
        )
    )
    assert code == 0, capsys.readouterr().err
    config = json.loads((run_dir / "config.json").read_text())
    assert config["accumulation"] == 2 and config["summary"]["steps"] == 4
    assert config["summary"]["valid_before"]["NDCG@10"] >= 0
    printed = capsys.readouterr().out
    assert "samples/s" in printed and "valid NDCG@10 before" in printed
    # The same command again refuses to clobber the run; --resume past the end says so.
    assert run_cli(*_args(files, run_dir, llama, "--max-steps", "4")) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert (
        run_cli(*_args(files, run_dir, llama, "--max-steps", "6", "--resume", "--eval-users", "10"))
        == 0
    )
    assert json.loads((run_dir / "config.json").read_text())["summary"]["resumed_from"] == 4


def test_e4srec_style_baseline(tmp_path, llama, capsys):
    files = tiny_files(tmp_path / "in")
    run_dir = tmp_path / "run"
    code = run_cli(
        "finetune", "--sequences", files.sequences, "--embeddings", files.embeddings,
        "--model", llama, "-o", run_dir, "--modalities", "collab", "--sid-init", "none",
        "--no-fusion", "--max-steps", "2", "--eval-users", "0",
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    model = json.loads((run_dir / "config.json").read_text())["model"]
    assert model["modalities"] == ["collab"] and model["sid_init"] == "none" and not model["fusion"]
    assert not (run_dir / "sid_tables.safetensors").exists()


@pytest.mark.parametrize(
    "case, message",
    [
        ("sids-for-unknown-items", "gives SIDs for 2 items that are not in"),
        ("tokenizer-modalities", "the tokeniser has no 'collab' modality"),
        ("missing-backbone", "backbone checkpoint not found"),
        ("tokenizer-dims", "trained on 16-d embeddings"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(case, message, tmp_path, llama, capsys):
    backbone = llama
    extra: tuple[str, ...] = ()
    if case == "sids-for-unknown-items":
        files = tiny_files(tmp_path / "in", extra_sid_items=2)
    elif case == "tokenizer-modalities":
        files = tiny_files(tmp_path / "in", modalities=("text",))
        extra = ("--modalities", "collab,text")
    elif case == "tokenizer-dims":
        files = tiny_files(tmp_path / "in", tokenizer_dims={"collab": 16, "text": 12})
    else:
        files = tiny_files(tmp_path / "in")
        backbone = tmp_path / "no-such-model"
    run_dir = tmp_path / "run"
    assert run_cli(*_args(files, run_dir, backbone, "--max-steps", "1", *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmesid: error: ") and message in err and err.count("\n") == 1
    assert not run_dir.exists()
