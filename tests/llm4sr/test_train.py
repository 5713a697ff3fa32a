"""Training on tiny random Llama / Qwen2 backbones: loss, reload through peft, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmesid_cli.artifacts.runs import TrainingLog, read_run_config
from mmesid_cli.errors import UserError
from mmesid_cli.llm4sr import ModelSpec, TrainConfig, finetune, load_inputs, load_run

HISTORIES = [np.array([1, 4, 9]), np.array([2]), np.array([5, 6, 7, 8, 10, 11, 12, 13])]


def _inputs(files):
    return load_inputs(files.sequences, files.embeddings, files.tokenizer, files.sids)


def _losses(run_dir):
    return {
        r["step"]: r["loss"]
        for r in TrainingLog(run_dir / "train_log.jsonl").records()
        if "loss" in r
    }


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_30_steps_lower_the_loss_and_the_adapter_reloads(architecture, files, request, tmp_path):
    backbone = request.getfixturevalue(f"{architecture}_dir")
    train = TrainConfig(lr=3e-3, warmup_steps=3, max_steps=30, eval_users=0, seed=0)
    result = finetune(_inputs(files), ModelSpec(backbone=str(backbone)), train, tmp_path / "run")
    losses = _losses(tmp_path / "run")
    assert sorted(losses) == list(range(1, 31))
    first, last = (
        np.mean([losses[s] for s in range(1, 6)]),
        np.mean([losses[s] for s in range(26, 31)]),
    )
    assert last < first - 0.3, (first, last)

    trained = result.model.eval()
    reloaded = load_run(tmp_path / "run")  # a fresh backbone + PeftModel.from_pretrained
    assert reloaded.item_ids == files.item_ids
    expected = trained.score(HISTORIES)
    torch.testing.assert_close(reloaded.score(HISTORIES), expected, rtol=1e-5, atol=1e-5)
    with reloaded.backbone.disable_adapter():  # the adapter is trained: without it scores move
        assert not torch.allclose(reloaded.score(HISTORIES), expected, atol=1e-4)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # peft probes a deprecated property
def test_adapter_loads_with_plain_peft(files, llama_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModel

    train = TrainConfig(lr=3e-3, warmup_steps=1, max_steps=3, eval_users=0)
    result = finetune(_inputs(files), ModelSpec(backbone=str(llama_dir)), train, tmp_path / "run")
    peft_model = PeftModel.from_pretrained(AutoModel.from_pretrained(llama_dir), tmp_path / "run")
    ours = dict(result.model.backbone.named_parameters())
    loaded = dict(peft_model.named_parameters())
    lora = [name for name in ours if "lora_B" in name]
    assert lora and all(torch.equal(ours[name], loaded[name]) for name in lora)
    assert any(ours[name].abs().sum() > 0 for name in lora)  # B starts at zero; it trained


def test_resume_continues_from_the_saved_step(files, llama_dir, tmp_path):
    spec = lambda: ModelSpec(backbone=str(llama_dir))  # noqa: E731
    train = TrainConfig(lr=3e-3, warmup_steps=2, max_steps=6, save_every=3, eval_users=0, seed=1)
    finetune(_inputs(files), spec(), train, tmp_path / "straight")

    class Killed(Exception):
        pass

    def kill_at_step_5(kind, payload):
        if kind == "step" and payload["step"] == 5:
            raise Killed

    with pytest.raises(Killed):  # the checkpoint of step 3 is on disk, steps 4-5 are lost
        finetune(_inputs(files), spec(), train, tmp_path / "resumed", on_event=kill_at_step_5)
    events = []
    result = finetune(
        _inputs(files),
        spec(),
        train,
        tmp_path / "resumed",
        resume=True,
        on_event=lambda kind, payload: events.append((kind, payload)),
    )
    assert ("resume", {"step": 3, "total": 6}) in events
    assert [p["step"] for kind, p in events if kind == "step"] == [4, 5, 6]
    straight, resumed = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]  # the lost steps are not logged twice
    for step in range(1, 7):
        assert resumed[step] == pytest.approx(straight[step], rel=1e-5), step
    assert result.summary["resumed_from"] == 3
    torch.testing.assert_close(
        load_run(tmp_path / "resumed").score(HISTORIES),
        load_run(tmp_path / "straight").score(HISTORIES),
        rtol=1e-5,
        atol=1e-5,
    )
    with pytest.raises(UserError, match="checkpoint is at step 6 of 6"):
        finetune(_inputs(files), spec(), train, tmp_path / "resumed", resume=True)


def test_validation_keeps_the_best_model(files, llama_dir, tmp_path):
    train = TrainConfig(lr=3e-3, warmup_steps=1, max_steps=4, eval_every=2, eval_users=15)
    result = finetune(_inputs(files), ModelSpec(backbone=str(llama_dir)), train, tmp_path / "run")
    valid = [r for r in TrainingLog(tmp_path / "run" / "train_log.jsonl").records() if "valid" in r]
    assert [r["step"] for r in valid] == [0, 2, 4]
    best = max(valid[1:], key=lambda r: r["valid"]["NDCG@10"])
    assert result.best_step == best["step"] and result.valid_before == valid[0]["valid"]
    from mmesid_cli.llm4sr.train import validate, validation_cases

    cases = validation_cases(_inputs(files), 15, 0)
    assert validate(load_run(tmp_path / "run"), cases)["NDCG@10"] == pytest.approx(
        best["valid"]["NDCG@10"], abs=1e-6
    )


def test_existing_run_is_not_overwritten(files, llama_dir, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    train = TrainConfig(max_steps=1, eval_users=0)
    with pytest.raises(UserError, match="not empty; pass --resume"):
        finetune(_inputs(files), ModelSpec(backbone=str(llama_dir)), train, tmp_path / "run")
    with pytest.raises(UserError, match="no checkpoint to resume"):
        finetune(
            _inputs(files), ModelSpec(backbone=str(llama_dir)), train, tmp_path / "run", resume=True
        )
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["notes.txt"]


def test_bfloat16_compute_trains_and_scores_in_float32(files, qwen2_dir, tmp_path):
    spec = ModelSpec(backbone=str(qwen2_dir), dtype="bfloat16")
    train = TrainConfig(lr=3e-3, warmup_steps=0, max_steps=2, eval_users=0)
    result = finetune(_inputs(files), spec, train, tmp_path / "run")
    # On the CPU the weights stay float32 and the LLM runs under bf16 autocast.
    assert result.model.compute_dtype == torch.bfloat16
    assert result.model.backbone.get_input_embeddings().weight.dtype == torch.float32
    assert read_run_config(tmp_path / "run" / "config.json")["model"]["compute_dtype"] == (
        "bfloat16"
    )
    run = load_run(tmp_path / "run")
    assert run.compute_dtype == torch.bfloat16
    scores = run.score(HISTORIES)
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
