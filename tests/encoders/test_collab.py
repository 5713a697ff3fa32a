"""SASRec training: only the training part, loss falls, it beats chance, same seed same model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmesid_cli.data.records import read_items, read_sequences
from mmesid_cli.data.split import eval_cases
from mmesid_cli.encoders.collab import SASRecTrainConfig, train_sasrec, training_sequences
from mmesid_cli.encoders.sasrec import SASRecConfig
from mmesid_cli.progress import Progress, Task
from tests.conftest import write_tiny_dataset

SMALL = {"dim": 16, "n_blocks": 1, "n_heads": 1, "max_len": 8, "dropout": 0.1}


@pytest.fixture
def tiny(tmp_path):
    items, seqs = write_tiny_dataset(tmp_path, n_users=60, n_items=30, min_len=6, max_len=12)
    return read_sequences(seqs, read_items(items))


def _train(sequences, progress=None, **train):
    config = SASRecTrainConfig(
        **{"lr": 1e-2, "max_epochs": 12, "eval_every": 3, "device": "cpu", **train}
    )
    return train_sasrec(sequences, SASRecConfig(**SMALL), config, progress=progress)


def test_training_sequences_are_the_training_part_only(tiny) -> None:
    got = training_sequences(tiny, max_len=8)
    expected = [s[:-2][-9:] for s in tiny.items if len(s) >= 4]
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_loss_falls_and_test_metrics_beat_chance(tiny) -> None:
    result = _train(tiny)
    losses = [e["loss"] for e in result.log]
    assert losses[-1] < 0.8 * losses[0]
    # Chance: a random ranking puts the target in the top 10 with probability 10 / candidates.
    chance = np.mean(
        [
            min(1.0, 10 / (30 - len(set(c.history.tolist()) - {c.target})))
            for c in eval_cases(tiny, "test")
        ]
    )
    assert result.test["HR@10"] > 1.5 * chance
    assert result.valid["NDCG@10"] == max(e["valid"]["NDCG@10"] for e in result.log if "valid" in e)
    assert result.model.item_table.shape == (30, 16)


def test_same_seed_same_model_other_seed_other_model(tiny) -> None:
    a = _train(tiny, max_epochs=2, seed=3)
    b = _train(tiny, max_epochs=2, seed=3)
    c = _train(tiny, max_epochs=2, seed=4)
    assert torch.equal(a.model.item_table, b.model.item_table)
    assert a.test == b.test
    assert not torch.equal(a.model.item_table, c.model.item_table)


def test_bce_loss_trains_too(tiny) -> None:
    result = _train(tiny, loss="bce", max_epochs=6)
    losses = [e["loss"] for e in result.log]
    assert losses[-1] < losses[0]


def test_early_stopping_keeps_the_best_validation_weights(tiny) -> None:
    result = _train(tiny, max_epochs=40, eval_every=1, patience=2, lr=5e-2)
    evaluated = [e for e in result.log if "valid" in e]
    best = max(evaluated, key=lambda e: e["valid"]["NDCG@10"])
    assert result.stopped_by == "early_stopping" and result.epochs_run < 40
    assert result.best_epoch == best["epoch"] and result.epochs_run == result.best_epoch + 2
    from mmesid_cli.encoders.collab import evaluate_sasrec

    # The returned model is the best epoch's: its validation figures are reproduced.
    assert evaluate_sasrec(result.model, tiny, "valid") == pytest.approx(best["valid"])


def test_a_time_limit_stops_after_one_evaluated_epoch_and_says_so(tiny) -> None:
    shown = _Recorder()
    result = _train(tiny, max_minutes=0.0, eval_every=5, progress=shown)
    assert (result.epochs_run, result.stopped_by, result.best_epoch) == (1, "time_cap", 1)
    assert "valid" in result.log[0]
    assert "time cap stopped training after epoch 1" in shown.notes[-1]


def test_epochs_run_out_is_reported_and_every_epoch_is_shown(tiny) -> None:
    shown = _Recorder()
    result = _train(tiny, max_epochs=3, eval_every=2, progress=shown)
    assert (result.epochs_run, result.stopped_by) == (3, "epochs")
    assert [n.split(":")[0] for n in shown.notes] == [f"SASRec epoch {e}/3" for e in (1, 2, 3)]
    assert "valid NDCG@10" in shown.notes[1] and "valid" not in shown.notes[0]
    # One task over the training users, restarted every epoch.
    n_users = len(training_sequences(tiny, 50))
    assert shown.totals == [n_users] and shown.advanced == 3 * n_users


class _Recorder(Progress):
    """A :class:`Progress` that keeps what the library reported."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.totals: list[float | None] = []
        self.advanced = 0.0

    def task(self, description: str, total: float | None = None) -> Task:
        self.totals.append(total)
        recorder = self

        class _Counted(Task):
            def advance(self, n: float = 1) -> None:
                recorder.advanced += n

        return _Counted()

    def note(self, message: str) -> None:
        self.notes.append(message)
