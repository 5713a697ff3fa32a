"""What lets the recommender learn: a start at the popularity prior, a live fusion gate,
E4SRec's linear item token, and an all-positions loss that is the per-prefix loss, batched.

Each figure is checked against an independent computation: the prior's cross-entropy from
counts in NumPy, a least-squares fit for affinity, one forward per prefix for the
all-positions loss.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from mmesid_cli.artifacts.runs import TrainingLog
from mmesid_cli.data.split import training_samples
from mmesid_cli.llm4sr import (
    ModelSpec,
    SequenceWindows,
    TrainConfig,
    build_model,
    calibrate_head,
    finetune,
    left_pad,
    load_inputs,
)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def skewed(files, tmp_path_factory):
    """The tiny catalogue with Zipf-like popularity (the prior is far from uniform)."""
    rng = np.random.default_rng(7)
    weights = 1.0 / np.arange(1, 31) ** 1.2
    path = tmp_path_factory.mktemp("skewed") / "sequences.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for u in range(60):
            length = int(rng.integers(4, 14))
            seq = rng.choice(30, size=length, p=weights / weights.sum())
            record = {"user_id": f"U{u}", "items": [files.item_ids[i] for i in seq]}
            handle.write(json.dumps(record) + "\n")
    return path


def _inputs(files, sequences=None, **kwargs):
    return load_inputs(
        sequences or files.sequences, files.embeddings, files.tokenizer, files.sids, **kwargs
    )


def _model(inputs, backbone, **spec):
    spec.setdefault("dtype", "float32")
    return build_model(ModelSpec(backbone=str(backbone), **spec), inputs, CPU)


def _windows(inputs, max_history=50):
    return SequenceWindows(inputs.sequences, max_history=max_history)


def _calibrated(inputs, backbone, **spec):
    model = _model(inputs, backbone, **spec).eval()
    windows = _windows(inputs)
    items, mask, _ = windows.tensors(np.arange(len(windows)), model.max_history)
    calibrate_head(model, items, mask)
    return model, windows


def _prior_cross_entropy(sequences) -> float:
    """−mean log p(label) with p_j = (c_j + 1) / (Σc + N), c counted on training parts."""
    counts = np.zeros(sequences.n_items)
    labels = []
    for seq in sequences.items:
        if len(seq) < 3:
            continue
        train = seq[:-2]
        for item in train:
            counts[item] += 1
        labels.extend(train[1:])
    p = (counts + 1) / (counts.sum() + len(counts))
    return float(-np.mean(np.log(p[np.array(labels)])))


@pytest.mark.parametrize("objective", ["all-positions", "last"])
def test_a_fresh_model_starts_at_the_popularity_prior(files, skewed, llama_dir, objective):
    inputs = _inputs(files, skewed)
    prior = _prior_cross_entropy(inputs.sequences)
    model, windows = _calibrated(inputs, llama_dir, objective=objective)
    items, mask, labels = windows.tensors(np.arange(len(windows)), model.max_history)
    if objective == "last":  # one forward per (history, target) pair
        samples = training_samples(inputs.sequences)
        items, mask = left_pad([h for h, _ in samples], 50)
        labels = torch.tensor([t for _, t in samples])
    with torch.no_grad():
        loss = float(model.loss(items, mask, labels))
    assert loss <= prior + 1e-5, (loss, prior)
    assert prior < np.log(30) - 0.2  # the prior is informative here: the check has teeth
    # The reference head (raw h, random E_out, no bias) starts above the prior.
    paper = _model(inputs, llama_dir, objective=objective, head="paper").eval()
    with torch.no_grad():
        assert float(paper.loss(items, mask, labels)) > prior + 0.05


def test_the_fusion_gate_is_alive_at_step_0(files, skewed, llama_dir):
    inputs = _inputs(files, skewed)
    model, windows = _calibrated(inputs, llama_dir)
    w = model.head.weights().detach()
    assert w.shape == (30, 3)
    torch.testing.assert_close(w, torch.full_like(w, 1 / 3))  # uniform, not one-hot
    items, mask, labels = windows.tensors(np.arange(len(windows)), model.max_history)
    model.loss(items, mask, labels).backward()
    gate = torch.cat([p.grad.reshape(-1) for p in model.head.gate.parameters()])
    assert torch.isfinite(gate).all() and gate.abs().max() > 1e-4
    # The paper's T = 1e-3 with its random gate: one head takes everything.
    paper = _model(inputs, llama_dir, head="paper")
    assert paper.head.temperature == 1e-3
    assert float(paper.head.weights().detach().max(dim=-1).values.min()) > 0.999


def test_e4srec_style_tokens_are_affine_in_the_collab_embedding(files, llama_dir):
    inputs = _inputs(files, modalities=["collab"], sid_init="none")
    model = _model(inputs, llama_dir, sid_init="none", fusion=False)
    assert model.item_tokens.item_map == "linear" and model.item_tokens.mlp is None
    with torch.no_grad():
        tokens = model.item_tokens(torch.arange(30)).double().numpy()
    design = np.hstack([inputs.embeddings["collab"].astype(np.float64), np.ones((30, 1))])
    fit, *_ = np.linalg.lstsq(design, tokens, rcond=None)
    residual = np.abs(design @ fit - tokens).max()
    assert residual < 1e-5 * np.abs(tokens).max()
    # The paper's MLP + GELU is not affine: the same fit leaves a large residual.
    mlp = _model(inputs, llama_dir, sid_init="none", fusion=False, item_map="mlp")
    with torch.no_grad():
        bent = mlp.item_tokens(torch.arange(30)).double().numpy()
    fit, *_ = np.linalg.lstsq(design, bent, rcond=None)
    assert np.abs(design @ fit - bent).max() > 1e-3 * np.abs(bent).max()


def test_all_positions_loss_is_the_mean_of_per_prefix_losses(files, llama_dir):
    inputs = _inputs(files)
    model, windows = _calibrated(inputs, llama_dir)  # eval: no LoRA dropout
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a head that is not at its zero start, so h matters
        for layer in [model.head.out, *model.head.maps.values()]:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))
    chosen = np.arange(6)
    items, mask, labels = windows.tensors(chosen, model.max_history)
    with torch.no_grad():
        batched = float(model.loss(items, mask, labels))
        one_by_one = []
        for i in chosen:  # one forward per prefix, the `last` objective without a suffix
            source, target = windows.inputs[i], windows.targets[i]
            for t in range(len(source)):
                prefix = torch.from_numpy(source[: t + 1])[None]
                scores = model(prefix, torch.ones_like(prefix))
                one_by_one.append(float(F.cross_entropy(scores, torch.tensor([target[t]]))))
    assert len(one_by_one) == int((labels >= 0).sum())
    assert batched == pytest.approx(np.mean(one_by_one), abs=1e-5)


@pytest.mark.parametrize("max_history", [50, 3])
def test_windows_hold_every_training_label_once(files, max_history):
    inputs = _inputs(files)
    windows = _windows(inputs, max_history)
    pairs = training_samples(inputs.sequences, max_samples=50, max_history=max_history)
    got = sorted(int(t) for target in windows.targets for t in target if t >= 0)
    assert got == sorted(t for _, t in pairs)
    assert windows.total_labels == len(pairs)
    assert max(len(x) for x in windows.inputs) <= max_history
    if max_history == 50:  # one window per user: label t sees exactly the sample's history
        contexts = sorted(
            (tuple(source[: t + 1]), int(target[t]))
            for source, target in zip(windows.inputs, windows.targets, strict=True)
            for t in range(len(source))
        )
        assert contexts == sorted((tuple(h), t) for h, t in pairs)


def test_the_log_counts_labels_and_the_groups_have_their_rates(files, llama_dir, tmp_path):
    inputs = _inputs(files)
    train = TrainConfig(
        lr=2e-4, head_lr=5e-3, warmup_steps=0, max_steps=3, eval_users=0, batch_size=4
    )
    result = finetune(inputs, ModelSpec(backbone=str(llama_dir)), train, tmp_path / "run")
    windows = _windows(inputs)
    order = windows.order(0)
    expected = np.cumsum([windows.labels(order[s * 4 : (s + 1) * 4]) for s in range(3)])
    steps = [r for r in TrainingLog(tmp_path / "run" / "train_log.jsonl").records() if "loss" in r]
    assert [r["labels"] for r in steps] == expected.tolist()
    assert result.summary["labels"] == expected[-1]
    calibration = result.summary["calibration"]
    assert calibration["scale"] > 0 and calibration["positions"] > 0


def test_the_time_cap_stops_after_a_step_and_says_so(files, llama_dir, tmp_path):
    from mmesid_cli.llm4sr import load_run

    train = TrainConfig(warmup_steps=0, max_steps=5, eval_users=8, max_minutes=1e-9)
    result = finetune(_inputs(files), ModelSpec(backbone=str(llama_dir)), train, tmp_path / "r")
    assert result.steps == 1 and result.summary["stopped_by"] == "time_cap"
    assert result.summary["planned_steps"] == 5
    assert result.valid_last is not None  # the stop is validated and the best model kept
    assert load_run(tmp_path / "r").score([np.array([1, 2])]).shape == (1, 30)
