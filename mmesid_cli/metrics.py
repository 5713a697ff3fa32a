"""HR@K, NDCG@K and MRR@K under full ranking with the user's history masked (docs/method.md §6).

Protocol, used by every evaluation in mmesid:

- every item of the catalogue is a candidate; the items of the user's history get score
  −inf, except the target itself when the user bought it before (so a repeat purchase can
  still be ranked);
- ties are broken pessimistically: the target's rank counts every other candidate whose
  score is greater *or equal*, so a constant-score model earns 0, never 1;
- rank r is 0-based; HR@K = [r < K]; NDCG@K = [r < K] / log2(r + 2); MRR@K = [r < K] / (r + 1),
  averaged over users.

Scoring is batched: a caller turns a batch of users into a (B, N) score matrix (one matmul),
and the rank of each target is one comparison per row — no Python loop per user or item.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

DEFAULT_KS = (5, 10, 20)


def mask_history(
    scores: torch.Tensor, histories: Sequence[np.ndarray], targets: torch.Tensor
) -> torch.Tensor:
    """Set the history items of each row to −inf in place (the target stays rankable)."""
    if len(histories) != scores.shape[0]:
        raise ValueError("one history per score row is needed")
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    cols = (
        np.concatenate([np.asarray(h, dtype=np.int64) for h in histories])
        if len(rows)
        else np.zeros(0, np.int64)
    )
    numpy_ok = scores.device.type == "cpu" and scores.dtype in (torch.float32, torch.float64)
    if len(rows) and numpy_ok and not scores.requires_grad:
        # numpy's single-threaded scatter: torch's stalls when threads outnumber free cores
        keep = cols != targets.cpu().numpy()[rows]
        scores.numpy()[rows[keep], cols[keep]] = -math.inf
    elif len(rows):
        rows_t = torch.as_tensor(rows, device=scores.device)
        cols_t = torch.as_tensor(cols, device=scores.device)
        keep = cols_t != targets.to(scores.device)[rows_t]
        scores[rows_t[keep], cols_t[keep]] = -math.inf
    return scores


def _count_at_least(scores: np.ndarray, targets: np.ndarray, threads: int) -> np.ndarray:
    """Per row, how many scores are ≥ the row's target score: (B, N), (B, 1) → (B,) int64.

    Rows are split across ``threads`` (numpy releases the GIL while it compares).
    """
    rows = scores.shape[0]
    if threads <= 1 or rows < 2 * threads:
        return np.count_nonzero(scores >= targets, axis=1).astype(np.int64)
    bounds = np.linspace(0, rows, threads + 1).astype(int)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        parts = pool.map(
            lambda lo, hi: np.count_nonzero(scores[lo:hi] >= targets[lo:hi], axis=1),
            bounds[:-1],
            bounds[1:],
        )
        return np.concatenate(list(parts)).astype(np.int64)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based pessimistic rank of each row's target among all columns: (B, N), (B,) → (B,).

    One comparison pass over the scores, no copy of them. A NaN score counts as −inf, the
    worst: a NaN elsewhere in the row compares false, so it never ranks above a finite
    target; a NaN or −inf target ties with every NaN and −inf, so it ranks last (N − 1).
    """
    targets = targets.to(scores.device).long()
    target_scores = scores.gather(1, targets[:, None])  # (B, 1)
    if scores.device.type == "cpu" and scores.dtype in (torch.float32, torch.float64):
        # numpy's compare-and-count is 2-3x faster than torch's on a CPU
        counted = _count_at_least(scores.numpy(), target_scores.numpy(), torch.get_num_threads())
        at_least = torch.from_numpy(counted)
    else:
        at_least = torch.count_nonzero(scores >= target_scores, dim=1)
    worst = torch.isnan(target_scores[:, 0]) | (target_scores[:, 0] == -math.inf)
    return torch.where(worst, scores.shape[1], at_least).long() - 1  # the target counts once


def per_user_metrics(
    ranks: np.ndarray | torch.Tensor, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, torch.Tensor]:
    """HR@K, NDCG@K and MRR@K of each user (float64, one value per rank) from 0-based ranks."""
    r = torch.as_tensor(ranks, dtype=torch.float64)
    if r.numel() == 0:
        raise ValueError("no users to evaluate")
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        hit = (r < k).double()
        out[f"HR@{k}"] = hit
        out[f"NDCG@{k}"] = hit / torch.log2(r + 2)
        out[f"MRR@{k}"] = hit / (r + 1)
    return out


def metrics_from_ranks(
    ranks: np.ndarray | torch.Tensor, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Mean HR@K, NDCG@K and MRR@K over users from 0-based target ranks."""
    return {name: float(v.mean()) for name, v in per_user_metrics(ranks, ks).items()}


def standard_errors(
    ranks: np.ndarray | torch.Tensor, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Standard error of each mean metric over users: sample std (n − 1) / √n; 0 for 1 user."""
    out = {}
    for name, v in per_user_metrics(ranks, ks).items():
        n = v.numel()
        out[name] = float(v.std(correction=1) / math.sqrt(n)) if n > 1 else 0.0
    return out


ScoreFn = Callable[[list[np.ndarray]], torch.Tensor]


@torch.no_grad()
def rank_targets(
    score_fn: ScoreFn,
    histories: Sequence[np.ndarray],
    targets: Sequence[int] | np.ndarray,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Ranks of every target: ``score_fn(histories of a batch) -> (B, N)`` scores per batch.

    Users are batched in order of history length (ranks come back in the order given), so
    a sequence model pads each batch to similar lengths instead of the longest history of
    a random batch; a user's rank does not depend on the batch it is scored in.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    targets = np.asarray(targets, dtype=np.int64)
    if len(histories) != len(targets):
        raise ValueError("one history per target is needed")
    ranks = np.empty(len(targets), dtype=np.int64)
    order = np.argsort([len(h) for h in histories], kind="stable")
    for start in range(0, len(targets), batch_size):
        rows = order[start : start + batch_size]
        hist = [histories[i] for i in rows]
        scores = score_fn(hist).float()
        t = torch.as_tensor(targets[rows], device=scores.device)
        mask_history(scores, hist, t)
        ranks[rows] = target_ranks(scores, t).cpu().numpy()
        if progress is not None:
            progress(len(rows))
    return ranks


def evaluate(
    score_fn: ScoreFn,
    histories: Sequence[np.ndarray],
    targets: Sequence[int] | np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 256,
) -> dict[str, float]:
    """Full-ranking metrics of ``score_fn`` on (history, target) pairs."""
    return metrics_from_ranks(rank_targets(score_fn, histories, targets, batch_size), ks)
