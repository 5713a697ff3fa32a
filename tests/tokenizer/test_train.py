"""Training: determinism, resume from a checkpoint, early stop, dead-code restart, masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmesid_cli.errors import UserError
from mmesid_cli.progress import Progress, Task
from mmesid_cli.tokenizer.config import TokenizerConfig
from mmesid_cli.tokenizer.serialize import export_tensors, load_checkpoint, save_checkpoint
from mmesid_cli.tokenizer.stats import encode_items
from mmesid_cli.tokenizer.train import ItemInputs, train


def tiny_inputs(n: int = 48, seed: int = 0) -> ItemInputs:
    rng = np.random.default_rng(seed)
    return ItemInputs(
        {
            "collab": rng.normal(size=(n, 4)).astype(np.float32),
            "text": rng.normal(size=(n, 6)).astype(np.float32),
        }
    )


def tiny_config(**changes: object) -> TokenizerConfig:
    values: dict[str, object] = dict(
        modalities=("collab", "text"),
        e_dim=4,
        hidden=(8,),
        levels=2,
        codebook_size=4,
        batch_size=16,
        epochs=3,
        patience=5,
        lr=1e-2,
        kmeans_iters=2,
    )
    values.update(changes)
    return TokenizerConfig(**values)  # type: ignore[arg-type]


def weights(result) -> dict[str, torch.Tensor]:  # noqa: ANN001
    return export_tensors(result.model)


def test_same_seed_same_weights_and_codes_other_seed_differs() -> None:
    data = tiny_inputs()
    a = train(tiny_config(), data, device="cpu")
    b = train(tiny_config(), data, device="cpu")
    c = train(tiny_config(seed=1), data, device="cpu")
    assert all(torch.equal(v, weights(b)[k]) for k, v in weights(a).items())
    assert not all(torch.equal(v, weights(c)[k]) for k, v in weights(a).items())
    codes_a = encode_items(a.model, data.inputs)
    codes_b = encode_items(b.model, data.inputs)
    assert all(np.array_equal(codes_a[m], codes_b[m]) for m in codes_a)
    assert [h["total"] for h in a.state.history] == [h["total"] for h in b.state.history]


def test_resume_from_a_checkpoint_ends_where_an_uninterrupted_run_ends(tmp_path: Path) -> None:
    data = tiny_inputs()
    path = tmp_path / "ckpt.safetensors"
    full = train(tiny_config(epochs=4, keep="last"), data, device="cpu")

    def saver(model, opt, state) -> None:  # noqa: ANN001
        save_checkpoint(path, model, opt, state, data.fingerprint())

    train(tiny_config(epochs=2, keep="last"), data, device="cpu", save_checkpoint=saver)
    resumed_from = load_checkpoint(
        path, tiny_config(epochs=4, keep="last"), data.dims(), data.fingerprint()
    )
    assert resumed_from[2].epoch == 2
    resumed = train(
        tiny_config(epochs=4, keep="last"), data, device="cpu", resume_from=resumed_from
    )
    assert resumed.state.epoch == 4
    assert all(torch.equal(v, weights(resumed)[k]) for k, v in weights(full).items())
    assert [h["total"] for h in resumed.state.history] == [h["total"] for h in full.state.history]


def test_checkpoint_refuses_other_settings_or_other_data(tmp_path: Path) -> None:
    data = tiny_inputs()
    path = tmp_path / "ckpt.safetensors"

    def saver(model, opt, state) -> None:  # noqa: ANN001
        save_checkpoint(path, model, opt, state, data.fingerprint())

    train(tiny_config(epochs=1), data, device="cpu", save_checkpoint=saver)
    with pytest.raises(UserError, match="lr"):
        load_checkpoint(path, tiny_config(lr=0.5), data.dims(), data.fingerprint())
    with pytest.raises(UserError, match="other embeddings"):
        load_checkpoint(path, tiny_config(), data.dims(), tiny_inputs(seed=9).fingerprint())


def test_early_stop_when_the_loss_plateaus() -> None:
    # lr 0: the weights never change, so the loss cannot keep improving
    result = train(
        tiny_config(lr=0.0, weight_decay=0.0, epochs=40, patience=2), tiny_inputs(), device="cpu"
    )
    assert result.state.stopped_early and result.stopped_by == "early_stopping"
    assert result.state.epoch < 40
    assert result.state.since_best == 2


def test_epochs_are_the_budget_and_a_time_cap_says_it_fired() -> None:
    notes: list[str] = []
    shown = _Notes(notes)
    assert train(tiny_config(epochs=2), tiny_inputs(), device="cpu").stopped_by == "epochs"
    result = train(
        tiny_config(epochs=5), tiny_inputs(), device="cpu", max_minutes=0.0, progress=shown
    )
    assert (result.stopped_by, result.state.epoch) == ("time_cap", 1)
    assert "time cap stopped training after epoch 1 of 5" in notes[-1]
    # k-means once per modality, the epochs, and each epoch's 3 batches of 16 of 48 items
    assert shown.done == {
        "k-means initialisation (modalities)": 2,
        "tokeniser epochs": 1,
        "  batches": 3,
    }


class _Notes(Progress):
    def __init__(self, notes: list[str]) -> None:
        self.notes, self.done = notes, {}

    def task(self, description: str, total: float | None = None) -> Task:
        done, name = self.done, description
        done[name] = 0

        class _Count(Task):
            def advance(self, n: float = 1) -> None:
                done[name] += n

            def update(self, *, completed=None, total=None, description=None) -> None:
                if completed is not None:
                    done[name] = completed

        return _Count()

    def note(self, message: str) -> None:
        self.notes.append(message)


def test_keep_best_restores_the_weights_of_the_best_epoch() -> None:
    data = tiny_inputs()
    result = train(tiny_config(epochs=4, keep="best"), data, device="cpu")
    best = result.state.best_tensors
    assert best is not None
    assert all(torch.equal(v, best[k]) for k, v in weights(result).items())


def test_dead_codes_are_restarted_onto_item_residuals() -> None:
    data = tiny_inputs(n=64)
    # uniform init around 0: most codes are never anyone's nearest
    config = tiny_config(kmeans_init="none", codebook_size=8, epochs=1, lr=0.0, weight_decay=0.0)
    without = train(config, data, device="cpu")
    with_restart = train(config.replace(dead_code_restart=True), data, device="cpu")
    restarted = with_restart.state.history[0]["restarted_codes"]
    assert restarted > 0

    def used(result) -> int:  # noqa: ANN001
        codes = encode_items(result.model, data.inputs).values()
        return sum(len(np.unique(c[:, level])) for c in codes for level in range(2))

    assert used(with_restart) > used(without)


def test_items_without_an_input_are_left_out_of_that_modality() -> None:
    data = tiny_inputs()
    present = np.ones(48, dtype=bool)
    present[::3] = False
    data.present = {"text": present}
    data.inputs["text"][~present] = np.nan  # would poison the loss if it were used
    result = train(tiny_config(epochs=2), data, device="cpu")
    assert all(np.isfinite(h["total"]) for h in result.state.history)
