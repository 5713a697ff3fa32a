"""The run directory: its files, the exported SID tables, consistency checks, load_run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mmesid_cli.artifacts.weights import read_weights
from mmesid_cli.errors import UserError
from mmesid_cli.llm4sr import ModelSpec, TrainConfig, finetune, item_tokens, load_inputs, load_run
from mmesid_cli.llm4sr.run import history_rows
from tests.llm4sr.tiny import HIDDEN


@pytest.fixture(scope="module")
def run(files, llama_dir, tmp_path_factory):
    inputs = load_inputs(files.sequences, files.embeddings, files.tokenizer, files.sids)
    folder = tmp_path_factory.mktemp("runs") / "run"
    train = TrainConfig(lr=1e-2, warmup_steps=0, max_steps=2, eval_users=0)
    result = finetune(inputs, ModelSpec(backbone=str(llama_dir)), train, folder)
    return folder, result


def test_run_directory_layout(run, files):
    folder, result = run
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "checkpoint",
        "config.json",
        "heads.safetensors",
        "sid_tables.safetensors",
        "train_log.jsonl",
    ]
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "mmesid.finetune-run"
    assert config["item_ids"] == files.item_ids
    assert config["model"]["modalities"] == ["collab", "text"]
    assert config["model"]["lora_targets"] == ["gate_proj", "up_proj", "down_proj"]
    assert config["summary"]["steps"] == 2 and config["summary"]["samples_per_s"] > 0
    heads = read_weights(folder / "heads.safetensors", kind="heads")
    assert "head.out.weight" in heads.tensors and "head.gate.0.weight" in heads.tensors


def test_exported_sid_tables_in_codebook_layout(run, files):
    folder, result = run
    tables = read_weights(folder / "sid_tables.safetensors", kind="tokenizer")
    assert tables.config["modalities"] == ["collab", "text"] and tables.config["levels"] == 2
    assert sorted(tables.tensors) == [
        f"codebook.{m}.{level}" for m in ("collab", "text") for level in (1, 2)
    ]
    model = result.model
    for m in ("collab", "text"):
        for level in (1, 2):
            table = tables.tensors[f"codebook.{m}.{level}"]
            assert table.shape == (8, HIDDEN)
            trained = model.item_tokens.sids[m].tables[level - 1].weight.detach()
            torch.testing.assert_close(table, trained)
            assert not torch.equal(table, torch.from_numpy(files.codebooks[m][level - 1]))


def test_load_run_scores_and_item_tokens(run):
    folder, result = run
    model = load_run(folder)
    assert not model.training
    rows = history_rows(model, [["I003", "I007"], ["I001"]])
    scores = model.score(rows)
    assert scores.shape == (2, 30) and scores.dtype == torch.float32
    np.testing.assert_allclose(item_tokens(model), item_tokens(result.model.eval()), atol=1e-6)
    with pytest.raises(UserError, match="'nope' is not in the run's catalogue"):
        history_rows(model, [["nope"]])


def test_adapter_from_another_save_is_refused(run, tmp_path):
    import shutil

    folder, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    shutil.copy(copy / "checkpoint" / "adapter_model.safetensors", copy)  # same step: identical
    load_run(copy)
    with open(copy / "adapter_model.safetensors", "ab") as handle:
        handle.write(b" ")
    with pytest.raises(UserError, match="adapter and heads come from different saves"):
        load_run(copy)


def test_load_run_of_a_missing_folder(tmp_path):
    with pytest.raises(UserError, match="run directory not found"):
        load_run(tmp_path / "absent")


def test_aligned_scorer_reorders_columns(run):
    from mmesid_cli.llm4sr.run import aligned_scorer

    model = load_run(run[0])
    other = list(reversed(model.item_ids)) + ["UNKNOWN"]  # another catalogue order
    score = aligned_scorer(model, other)
    history_in_other = [np.array([other.index("I003"), other.index("I007"), 30])]
    got = score(history_in_other)
    expected = model.score(history_rows(model, [["I003", "I007"]]))
    assert got.shape == (1, 31) and got[0, 30] == float("-inf")
    torch.testing.assert_close(got[0, :30], expected[0].flip(0))
    assert aligned_scorer(model, model.item_ids) == model.score


def test_cli_evaluate_of_a_run_equals_a_per_user_loop(run, files, tmp_path):
    """`mmesid evaluate RUN` (batched, padded, aligned columns) against one user at a time."""
    from mmesid_cli.data.records import read_items, read_sequences
    from tests.conftest import run_cli

    per_user, report = tmp_path / "ranks.jsonl", tmp_path / "eval.json"
    code = run_cli(
        "evaluate", run[0], "--sequences", files.sequences, "--items", files.items,
        "--batch-size", "5", "--per-user", per_user, "--json", report, "--device", "cpu",
    )  # fmt: skip
    assert code == 0
    got = {r["user_id"]: r for r in map(json.loads, per_user.read_text().splitlines())}
    items = read_items(files.items)
    sequences = read_sequences(files.sequences, items)
    model = load_run(run[0], device="cpu")
    expected_hits = 0
    for user, rows in zip(sequences.user_ids, sequences.items, strict=True):
        ids = [items.records[r]["item_id"] for r in rows]
        history, target = ids[:-1], ids[-1]
        scores = model.score(history_rows(model, [history]))[0].tolist()
        t = model.item_ids.index(target)
        masked = {model.item_ids.index(i) for i in history} - {t}
        above = sum(
            1 for j, value in enumerate(scores) if j != t and j not in masked and value >= scores[t]
        )
        assert got[user]["target"] == target and got[user]["rank"] == above, user
        expected_hits += above < 10
    assert len(got) == len(sequences.user_ids)
    metrics = json.loads(report.read_text())["metrics"]
    assert metrics["HR@10"] == pytest.approx(expected_hits / len(got))


def test_cli_evaluate_of_a_run_logs_its_progress(run, files, tmp_path, capsys):
    """In a log (stderr not a terminal) the ranking ends in a timestamped progress line."""
    from tests.conftest import run_cli

    code = run_cli(
        "evaluate", run[0], "--sequences", files.sequences, "--items", files.items,
        "--device", "cpu",
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    n_users = len(Path(files.sequences).read_text().splitlines())  # every tiny user is eligible
    pattern = rf"\d\d:\d\d:\d\d ranking 30 items: {n_users}/{n_users} \(100%\), .* done"
    assert re.search(pattern, err), err


class _CharTokenizer:
    """One token per character; a chat template that may refuse a system turn."""

    def __init__(self, chat: bool = True, system_role: bool = True):
        self.chat_template = "<chat>" if chat else None
        self.system_role = system_role

    def apply_chat_template(self, turns, tokenize, add_generation_prompt):
        if not self.system_role and any(t["role"] == "system" for t in turns):
            raise ValueError("no system role")
        return "".join(f"<{t['role']}>{t['content']}</>" for t in turns) + "<assistant>"

    def __call__(self, text, add_special_tokens):
        return {"input_ids": [ord(c) for c in text]}


def _text(ids):
    return "".join(map(chr, ids))


def test_prompt_is_cut_around_the_history():
    from mmesid_cli.llm4sr.run import prompt_token_ids

    prefix, suffix, used = prompt_token_ids(_CharTokenizer(), "Predict.", system="Be kind.")
    assert used == "chat"
    assert _text(prefix) == "<system>Be kind.</><user>Predict.\n"
    assert _text(suffix) == "</><assistant>"
    prefix, _, _ = prompt_token_ids(_CharTokenizer(system_role=False), "Predict.", system="S.")
    assert _text(prefix) == "<user>S.\nPredict.\n"
    prefix, suffix, used = prompt_token_ids(_CharTokenizer(chat=False), "Predict.")
    assert used == "plain" and _text(prefix) == "### Instruction:\nPredict.\n### Input:\n"
    assert _text(suffix) == "\n### Response:\n"
    with pytest.raises(UserError, match="no chat template"):
        prompt_token_ids(_CharTokenizer(chat=False), "Predict.", template="chat")
