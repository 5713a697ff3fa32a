"""Leave-one-out split, training samples and item frequency against brute-force loops."""

from __future__ import annotations

import numpy as np

from mmesid_cli.data.records import SequenceTable
from mmesid_cli.data.split import eval_cases, item_frequency, training_samples


def _table(seqs: list[list[int]], n_items: int = 10) -> SequenceTable:
    return SequenceTable(
        user_ids=[str(i) for i in range(len(seqs))],
        items=[np.array(s, dtype=np.int64) for s in seqs],
        timestamps=[None] * len(seqs),
        n_items=n_items,
    )


def test_eval_cases_follow_leave_one_out() -> None:
    table = _table([[1, 2, 3, 4], [5, 6], [7, 8, 9]])
    test = eval_cases(table, "test")
    valid = eval_cases(table, "valid")
    assert [(c.user, c.history.tolist(), c.target) for c in test] == [
        (0, [1, 2, 3], 4),
        (2, [7, 8], 9),
    ]
    assert [(c.user, c.history.tolist(), c.target) for c in valid] == [(0, [1, 2], 3), (2, [7], 8)]


def test_training_samples_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    seqs = [list(rng.integers(0, 10, size=int(rng.integers(3, 70)))) for _ in range(30)]
    table = _table(seqs)
    expected = []
    for seq in seqs:
        train = seq[:-2]
        for t in range(len(train)):
            if t >= 1 and t >= len(train) - 50:
                expected.append((train[max(0, t - 50) : t], train[t]))
    got = [(h.tolist(), t) for h, t in training_samples(table)]
    assert got == [([int(x) for x in h], int(t)) for h, t in expected]


def test_frequency_counts_training_part_only() -> None:
    table = _table([[0, 1, 2, 3], [0, 3, 4]], n_items=6)
    # user 0 trains on [0, 1], user 1 on [0]; targets 2, 3 and 3, 4 are never counted
    assert item_frequency(table).tolist() == [2, 1, 0, 0, 0, 0]
