"""Full-ranking evaluation of any scorer, with the protocol recorded next to every figure.

A *scorer* maps a batch of histories (item rows) to a (B, N) score matrix; this module
ranks each user's target with :mod:`mmesid_cli.metrics` (history masked, pessimistic
ties) and records how the figures were made: split, masking, users, catalogue size, model.
Baselines that need no training live here too (popularity).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from mmesid_cli.data.records import SequenceTable
from mmesid_cli.data.split import eval_cases, item_frequency
from mmesid_cli.metrics import (
    DEFAULT_KS,
    ScoreFn,
    metrics_from_ranks,
    rank_targets,
    standard_errors,
)

PROTOCOL = (
    "leave-one-out; full ranking over all items; the user's history items scored -inf "
    "(except the target); pessimistic ties (equal scores rank above the target)"
)


@dataclass
class Evaluation:
    metrics: dict[str, float]
    stderr: dict[str, float]  # standard error of each mean over the evaluated users
    ranks: np.ndarray  # 0-based rank of each evaluated user's target
    users: list[int]  # rows of SequenceTable.user_ids, aligned with ranks
    targets: np.ndarray
    protocol: dict[str, object]


def popularity_scorer(sequences: SequenceTable) -> ScoreFn:
    """Score every item by its interactions in the training parts (no valid/test leakage)."""
    scores = torch.as_tensor(item_frequency(sequences), dtype=torch.float32)

    def score(histories: list[np.ndarray]) -> torch.Tensor:
        return scores.expand(len(histories), -1).clone()

    return score


def evaluate_scorer(
    score_fn: ScoreFn,
    sequences: SequenceTable,
    split: Literal["valid", "test"] = "test",
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 256,
    model: str = "",
    progress: Callable[[int], None] | None = None,
    max_users: int | None = None,
    seed: int = 0,
) -> Evaluation:
    """Rank every eligible user's target; ``max_users`` evaluates a seeded random subset."""
    cases = eval_cases(sequences, split)
    if not cases:
        raise ValueError("no user has the 3 items a leave-one-out split needs")
    eligible = len(cases)
    if max_users is not None and max_users < eligible:
        keep = np.sort(np.random.default_rng(seed).choice(eligible, size=max_users, replace=False))
        cases = [cases[i] for i in keep]
    histories = [c.history for c in cases]
    targets = np.array([c.target for c in cases], dtype=np.int64)
    ranks = rank_targets(score_fn, histories, targets, batch_size=batch_size, progress=progress)
    protocol = {
        "split": split,
        "protocol": PROTOCOL,
        "users": len(cases),
        "users_eligible": eligible,
        "user_sample": None if len(cases) == eligible else {"size": len(cases), "seed": seed},
        "users_skipped_too_short": len(sequences) - eligible,
        "catalogue_size": sequences.n_items,
        "ks": list(ks),
        "model": model,
    }
    return Evaluation(
        metrics=metrics_from_ranks(ranks, ks),
        stderr=standard_errors(ranks, ks),
        ranks=ranks,
        users=[c.user for c in cases],
        targets=targets,
        protocol=protocol,
    )
