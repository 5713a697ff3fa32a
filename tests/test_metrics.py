"""`mmesid_cli.metrics` against a brute-force per-user Python loop (random scores, many ties)."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch

from mmesid_cli import metrics

KS = (1, 5, 10, 20)


def _brute_rank(scores: list[float], history: list[int], target: int) -> int:
    """Walk every item: count the candidates (not history, except the target) scored >= target."""
    masked = set(history) - {target}
    return sum(
        1 for j, s in enumerate(scores) if j != target and j not in masked and s >= scores[target]
    )


def _brute_metrics(ranks: list[int], ks) -> dict[str, float]:
    out = {}
    for k in ks:
        hits = [r < k for r in ranks]
        out[f"HR@{k}"] = sum(hits) / len(ranks)
        out[f"NDCG@{k}"] = sum(
            1 / math.log2(r + 2) for r, h in zip(ranks, hits, strict=True) if h
        ) / len(ranks)
        out[f"MRR@{k}"] = sum(1 / (r + 1) for r, h in zip(ranks, hits, strict=True) if h) / len(
            ranks
        )
    return out


def _random_case(seed: int, n_users: int = 53, n_items: int = 40):
    """Integer scores in 0…3 (ties everywhere), histories with repeats and the target in some."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(n_users, n_items)).astype(np.float32)
    histories, targets = [], []
    for u in range(n_users):
        history = rng.integers(
            0, n_items, size=int(rng.integers(0, 12))
        )  # may repeat; may be empty
        target = int(rng.integers(n_items))
        if u % 4 == 0 and len(history):  # a repeat purchase: the target is in the history
            target = int(history[0])
        histories.append(history.astype(np.int64))
        targets.append(target)
    return scores, histories, np.array(targets)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("batch_size", [1, 7, 256])
def test_ranks_and_metrics_match_brute_force(seed: int, batch_size: int) -> None:
    scores, histories, targets = _random_case(seed)
    table = torch.from_numpy(scores)
    user_of = {id(h): u for u, h in enumerate(histories)}  # batches come in any order

    def score_fn(batch: list[np.ndarray]) -> torch.Tensor:
        # The rows of this batch's users; a fresh copy, since ranking masks it in place.
        return table[[user_of[id(h)] for h in batch]].clone()

    ranks = metrics.rank_targets(score_fn, histories, targets, batch_size=batch_size)
    expected = [
        _brute_rank(scores[u].tolist(), histories[u].tolist(), int(targets[u]))
        for u in range(len(targets))
    ]
    assert ranks.tolist() == expected
    got = metrics.metrics_from_ranks(ranks, KS)
    for key, value in _brute_metrics(expected, KS).items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_evaluate_end_to_end_equals_brute_force() -> None:
    scores, histories, targets = _random_case(5, n_users=30, n_items=25)
    table = torch.from_numpy(scores)
    lookup = {id(h): u for u, h in enumerate(histories)}

    def score_fn(batch: list[np.ndarray]) -> torch.Tensor:
        return table[[lookup[id(h)] for h in batch]]

    got = metrics.evaluate(score_fn, histories, targets, ks=(3, 10), batch_size=4)
    ranks = [
        _brute_rank(scores[u].tolist(), histories[u].tolist(), int(targets[u])) for u in range(30)
    ]
    assert got == pytest.approx(_brute_metrics(ranks, (3, 10)), abs=1e-12)


def test_ties_are_pessimistic_and_constant_scores_earn_nothing() -> None:
    n = 10
    ranks = metrics.rank_targets(
        lambda b: torch.zeros(len(b), n), [np.array([], dtype=np.int64)] * 2, [0, 9]
    )
    assert ranks.tolist() == [
        n - 1,
        n - 1,
    ]  # every other item ties with the target and ranks above it
    assert metrics.metrics_from_ranks(ranks, (5,))["HR@5"] == 0.0


def test_history_is_masked_but_a_repeated_target_is_not() -> None:
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    # History items 0 and 1 outrank the target 2 but are masked: the target comes first.
    assert metrics.rank_targets(lambda b: scores.clone(), [np.array([0, 1])], [2]).tolist() == [0]
    # The target 1 is also in the history (bought again): it stays rankable, item 0 is masked.
    assert metrics.rank_targets(lambda b: scores.clone(), [np.array([0, 1])], [1]).tolist() == [0]
    # Nothing masked: target 3 has items 0, 1, 2 above it.
    assert metrics.rank_targets(
        lambda b: scores.clone(), [np.array([], np.int64)], [3]
    ).tolist() == [3]


def test_known_values() -> None:
    got = metrics.metrics_from_ranks(np.array([0, 1, 4, 9, 30]), (5, 10))
    assert got["HR@5"] == pytest.approx(3 / 5)
    assert got["NDCG@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 5)
    assert got["MRR@10"] == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 10) / 5)


def test_standard_errors_match_statistics_stdev() -> None:
    ranks = [0, 1, 4, 9, 30, 2, 2]
    got = metrics.standard_errors(np.array(ranks), (5,))
    ndcg = [1 / math.log2(r + 2) if r < 5 else 0.0 for r in ranks]
    assert got["NDCG@5"] == pytest.approx(statistics.stdev(ndcg) / math.sqrt(len(ranks)))
    hits = [float(r < 5) for r in ranks]
    assert got["HR@5"] == pytest.approx(statistics.stdev(hits) / math.sqrt(len(ranks)))
    assert metrics.standard_errors(np.array([3]), (5,))["HR@5"] == 0.0


def test_a_nan_target_score_ranks_last_not_first() -> None:
    scores = torch.tensor([[float("nan"), 1.0, 2.0, 3.0]])
    ranks = metrics.rank_targets(lambda b: scores.clone(), [np.array([], np.int64)], [0])
    assert ranks.tolist() == [3]  # a broken model must not earn NDCG = 1 / log2(1) = inf


def test_rank_targets_refuses_a_batch_size_below_one() -> None:
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        metrics.rank_targets(lambda b: torch.zeros(len(b), 3), [np.array([0])], [1], batch_size=0)


def test_ranks_with_nan_and_infinite_scores_match_a_loop_that_reads_nan_as_minus_inf() -> None:
    rng = np.random.default_rng(9)
    scores = torch.as_tensor(rng.integers(0, 5, size=(200, 30)).astype(np.float32))
    specials = torch.tensor([float("nan"), float("inf"), -float("inf")])
    holes = torch.as_tensor(rng.random((200, 30)) < 0.15)
    scores[holes] = specials[torch.as_tensor(rng.integers(0, 3, int(holes.sum())))]
    targets = torch.as_tensor(rng.integers(0, 30, 200))
    ranks = metrics.target_ranks(scores, targets)
    for row in range(200):
        values = [-math.inf if math.isnan(v) else v for v in scores[row].tolist()]
        t = values[int(targets[row])]
        expected = sum(v >= t for j, v in enumerate(values) if j != int(targets[row]))
        assert int(ranks[row]) == expected, row


def test_ranks_do_not_depend_on_the_thread_count() -> None:
    rng = np.random.default_rng(10)
    scores = torch.as_tensor(rng.integers(0, 50, size=(64, 500)).astype(np.float32))
    targets = torch.as_tensor(rng.integers(0, 500, 64))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = metrics.target_ranks(scores, targets)
        torch.set_num_threads(3)
        three = metrics.target_ranks(scores, targets)
    finally:
        torch.set_num_threads(before)
    assert one.tolist() == three.tolist()
