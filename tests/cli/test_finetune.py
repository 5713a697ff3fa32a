"""``mmesid finetune`` end to end on tiny inputs; bad input: exit 2 and nothing written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from mmesid_cli.artifacts.embeddings import read_embeddings
from mmesid_cli.artifacts.weights import read_weights
from tests.conftest import run_cli
from tests.llm4sr.tiny import DIMS, HIDDEN, tiny_backbone, tiny_files


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


def test_the_cpu_preset_plans_and_estimates_before_training(tmp_path, llama, capsys):
    files = tiny_files(tmp_path / "in")
    run_dir = tmp_path / "run"
    # --epochs given: the preset's max_steps no longer overrides it; the rest is the preset's.
    code = run_cli(
        *_args(files, run_dir, llama, "--preset", "cpu", "--epochs", "1", "--eval-every", "1")
    )
    err = capsys.readouterr().err
    assert code == 0, err
    config = json.loads((run_dir / "config.json").read_text())
    training = config["training"]
    assert (training["epochs"], training["max_steps"]) == (1, None)
    assert (training["warmup_steps"], training["eval_users"], training["eval_every"]) == (
        20,
        500,
        1,
    )
    steps = config["summary"]["steps"]
    plan = re.search(
        r"plan \(preset cpu\): (\d+) steps x 16 = (\d+) samples .*; (\d+) validations on", err
    )
    assert plan and int(plan[1]) == steps and int(plan[2]) == 16 * steps
    # The plan counts every validation the run makes (at the start, each step, none twice).
    logged = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert int(plan[3]) == sum("valid" in entry for entry in logged) == steps + 1
    assert re.search(r"measured [\d.]+ samples/s over the first \d+ steps: .*ETA \d:\d\d:\d\d", err)
    assert "validation at step 0" in err  # each validation pass is a progress task


def test_presets_fill_only_what_is_not_given():
    from mmesid_cli.llm4sr.train import TrainConfig, preset_train_config

    assert preset_train_config("paper") == TrainConfig()
    cpu = preset_train_config("cpu")
    assert (cpu.max_steps, cpu.warmup_steps, cpu.eval_users, cpu.eval_every) == (200, 20, 500, 100)
    assert preset_train_config("cpu", max_steps=7, eval_users=-1).eval_users is None
    assert preset_train_config("cpu", eval_users=0).eval_users == 0
    with pytest.raises(ValueError, match="unknown preset"):
        preset_train_config("gpu")


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

    # `mmesid collapse` reads the run's item tokens; W_c e_c + b has rank at most d_c + 1.
    report = tmp_path / "collapse.json"
    code = run_cli("collapse", run_dir, f"{run_dir}:collab.projection", "-o", report)
    assert code == 0, capsys.readouterr().err
    rows = {r["matrix"]: r for r in json.loads(report.read_text())["rows"]}
    tokens, projection = rows["run:tokens"], rows["run:collab.projection"]
    n_items = len(json.loads((run_dir / "config.json").read_text())["item_ids"])
    assert tokens["shape"] == projection["shape"] == [n_items, HIDDEN]
    embeddings = read_embeddings(files.embeddings).tables["collab"].values
    heads = read_weights(run_dir / "heads.safetensors", kind="heads").tensors
    weight = next(v for k, v in heads.items() if "projections.collab.weight" in k).numpy()
    bias = next(v for k, v in heads.items() if "projections.collab.bias" in k).numpy()
    explicit = embeddings.astype(np.float64) @ weight.T + bias
    expected = np.linalg.svd(explicit, compute_uv=False)  # float64; the run's are float32
    np.testing.assert_allclose(projection["singular_values"], expected, atol=1e-5 * expected[0])
    assert projection["rank"] == np.linalg.matrix_rank(explicit) <= DIMS["collab"] + 1
    assert run_cli("collapse", f"{run_dir}:text.sid") == 2
    assert "no item-token part 'text.sid'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "case, message",
    [
        ("sids-for-unknown-items", "gives SIDs for 2 items that are not in"),
        ("tokenizer-modalities", "the tokeniser has no 'collab' modality"),
        ("missing-backbone", "backbone checkpoint not found"),
        ("tokenizer-dims", "trained on 16-d embeddings"),
        ("--objective=every", "--objective must be one of all-positions, last, not 'every'"),
        ("--head=mine", "--head must be one of calibrated, paper"),
        ("--item-map=deep", "--item-map must be one of auto, mlp, linear"),
        ("--output-head=image", "--output-head must be auto, id or one of collab, text"),
        ("--output-head=collab", "with fusion all heads score"),
        ("--head-lr=0", "--head-lr must be positive"),
        ("--max-minutes=0", "'--max-minutes': must be a positive number"),
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
    elif case.startswith("--"):  # an option's value
        files = tiny_files(tmp_path / "in")
        extra = tuple(case.split("=", 1))
    else:
        files = tiny_files(tmp_path / "in")
        backbone = tmp_path / "no-such-model"
    run_dir = tmp_path / "run"
    assert run_cli(*_args(files, run_dir, backbone, "--max-steps", "1", *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmesid: error: ") and message in err and err.count("\n") == 1
    assert not run_dir.exists()
