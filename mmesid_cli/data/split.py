"""Leave-one-out split, training samples and item frequency (docs/method.md §2).

Per user with chronological items s_1 … s_n: the test target is s_n (history s_1 … s_{n−1}),
the validation target is s_{n−1} (history s_1 … s_{n−2}), and the training part is
s_1 … s_{n−2}. Training samples are, for each of the last ``min(max_samples, len(train))``
positions t of the training part that have at least one item before them, the pair
(s_1 … s_{t−1}, s_t). Item frequency counts the training part only, so no validation or
test target leaks into a model's popularity features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from mmesid_cli.data.records import SequenceTable

Split = Literal["train", "valid", "test"]
MIN_LENGTH = 3  # a user needs a test target, a validation target and one training item


@dataclass(frozen=True)
class EvalCase:
    """One user's evaluation: the history (item rows) and the target row."""

    user: int  # index into SequenceTable.user_ids
    history: np.ndarray
    target: int


def eligible(seq: np.ndarray) -> bool:
    return len(seq) >= MIN_LENGTH


def train_part(seq: np.ndarray) -> np.ndarray:
    return seq[:-2]


def eval_cases(sequences: SequenceTable, split: Literal["valid", "test"]) -> list[EvalCase]:
    """Users with at least :data:`MIN_LENGTH` items, each as (history, target) for ``split``."""
    drop = 1 if split == "test" else 2
    cases = []
    for user, seq in enumerate(sequences.items):
        if eligible(seq):
            cut = len(seq) - drop
            cases.append(EvalCase(user=user, history=seq[:cut], target=int(seq[cut])))
    return cases


def training_samples(
    sequences: SequenceTable, max_samples: int = 50, max_history: int | None = 50
) -> list[tuple[np.ndarray, int]]:
    """(history, target) pairs from the training part of each eligible user (docs/method.md §2)."""
    samples: list[tuple[np.ndarray, int]] = []
    for seq in sequences.items:
        if not eligible(seq):
            continue
        train = train_part(seq)
        first = max(1, len(train) - max_samples)
        for t in range(first, len(train)):
            start = 0 if max_history is None else max(0, t - max_history)
            samples.append((train[start:t], int(train[t])))
    return samples


def item_frequency(sequences: SequenceTable) -> np.ndarray:
    """Interactions per item in the training parts only (N,), int64."""
    counts = np.zeros(sequences.n_items, dtype=np.int64)
    for seq in sequences.items:
        if eligible(seq):
            np.add.at(counts, train_part(seq), 1)
    return counts


def split_sizes(sequences: SequenceTable) -> dict[str, int]:
    eligible_users = [s for s in sequences.items if eligible(s)]
    return {
        "users_evaluated": len(eligible_users),
        "users_too_short": len(sequences) - len(eligible_users),
        "train_interactions": int(sum(len(s) - 2 for s in eligible_users)),
        "valid_targets": len(eligible_users),
        "test_targets": len(eligible_users),
        "train_samples": len(training_samples(sequences)),
    }
