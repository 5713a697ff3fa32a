"""k-means for codebook initialisation (docs/method.md §3): plain (Lloyd) and size-balanced.

The reference initialises each level with ``KMeansConstrained`` (cluster sizes between
``min(N // 2K, 50)`` and four times that): every code starts with items, so none is dead on
the first step. :func:`balanced_kmeans` keeps those bounds with a capacity-constrained
assignment step (clusters accept their closest proposers until full, then undersized clusters
take the items that are cheapest to move). Both run in torch on the data's device and are
deterministic for a given ``seed``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mmesid_cli.tokenizer.losses import pairwise_sq_dists


def balanced_size_bounds(n: int, k: int) -> tuple[int, int]:
    """(size_min, size_max) of the reference: min(N // 2K, 50) and 4 × that (≥ ⌈N / K⌉)."""
    size_min = min(n // (2 * k), 50)
    size_max = max(4 * size_min, math.ceil(n / k))
    return size_min, size_max


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: (N, d) → (k, d) rows of x, each drawn with probability ∝ D²."""
    n = x.shape[0]
    x_sq = x.pow(2).sum(dim=1)  # (N,)
    draws = torch.rand(k, generator=generator, dtype=torch.float64).tolist()
    picks = [min(int(draws[0] * n), n - 1)]
    closest = (x_sq + x_sq[picks[0]] - 2.0 * (x @ x[picks[0]])).clamp_min_(0.0)  # (N,) D²
    for draw in draws[1:]:
        cumulative = torch.cumsum(closest.double(), dim=0)
        total = float(cumulative[-1])
        if total <= 0:  # fewer distinct points than k: any point will do
            pick = min(int(draw * n), n - 1)
        else:
            target = torch.tensor([draw * total], dtype=torch.float64, device=x.device)
            pick = min(int(torch.searchsorted(cumulative, target)), n - 1)
        picks.append(pick)
        closest = torch.minimum(closest, (x_sq + x_sq[pick] - 2.0 * (x @ x[pick])).clamp_min_(0.0))
    return x[picks].clone()


def _means(x: torch.Tensor, assign: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    k = centers.shape[0]
    sums = torch.zeros_like(centers).index_add_(0, assign, x)
    counts = torch.bincount(assign, minlength=k).to(x.dtype)
    filled = counts > 0
    out = centers.clone()
    out[filled] = sums[filled] / counts[filled, None]
    return out


def _reseed_empty(x: torch.Tensor, centers: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Move empty clusters onto the points farthest from their centre (deterministic)."""
    assign = d.argmin(dim=1)
    counts = torch.bincount(assign, minlength=centers.shape[0])
    empty = torch.nonzero(counts == 0).flatten()
    if empty.numel():
        far = d.min(dim=1).values.argsort(descending=True, stable=True)[: empty.numel()]
        centers = centers.clone()
        centers[empty] = x[far]
    return centers


def kmeans(
    x: torch.Tensor, k: int, iters: int = 10, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding. (N, d) → centres (k, d), labels (N,)."""
    _check(x, k)
    generator = torch.Generator().manual_seed(seed)
    centers = kmeans_plus_plus(x, k, generator)
    for _ in range(iters):
        d = pairwise_sq_dists(x, centers)  # (N, k)
        centers = _reseed_empty(x, centers, d)
        d = pairwise_sq_dists(x, centers)
        centers = _means(x, d.argmin(dim=1), centers)
    return centers, pairwise_sq_dists(x, centers).argmin(dim=1)


def balanced_kmeans(
    x: torch.Tensor,
    k: int,
    iters: int = 10,
    seed: int = 0,
    size_min: int | None = None,
    size_max: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means whose clusters hold between size_min and size_max points (reference bounds).

    (N, d) → centres (k, d), labels (N,) with every cluster size in [size_min, size_max].
    """
    _check(x, k)
    n = x.shape[0]
    default_min, default_max = balanced_size_bounds(n, k)
    size_min = default_min if size_min is None else size_min
    size_max = default_max if size_max is None else size_max
    if size_min * k > n or size_max * k < n or size_min > size_max:
        raise ValueError(f"cluster sizes [{size_min}, {size_max}] × {k} cannot hold {n} points")
    generator = torch.Generator().manual_seed(seed)
    centers = kmeans_plus_plus(x, k, generator)
    assign = capacity_assign(pairwise_sq_dists(x, centers), size_min, size_max)
    for _ in range(iters):
        centers = _means(x, assign, centers)
        assign = capacity_assign(pairwise_sq_dists(x, centers), size_min, size_max)
    return _means(x, assign, centers), assign


def capacity_assign(d: torch.Tensor, size_min: int, size_max: int) -> torch.Tensor:
    """Assign N points to k clusters from their (N, k) distances, sizes in [size_min, size_max].

    Rounds of proposals: each unassigned point proposes to its closest open cluster; a cluster
    accepts its closest proposers up to its capacity and closes when full. Then each
    undersized cluster takes the points whose move costs least, from clusters above size_min.
    """
    n, k = d.shape
    assign = torch.full((n,), -1, dtype=torch.long, device=d.device)
    counts = torch.zeros(k, dtype=torch.long, device=d.device)
    open_ = torch.ones(k, dtype=torch.bool, device=d.device)
    pending = torch.arange(n, device=d.device)
    while pending.numel():
        dd = d[pending].masked_fill(~open_, float("inf"))  # (P, k)
        cost, choice = dd.min(dim=1)
        order = torch.argsort(cost, stable=True)
        order = order[torch.argsort(choice[order], stable=True)]  # by cluster, then by cost
        chosen = choice[order]
        rank = torch.arange(order.numel(), device=d.device) - torch.searchsorted(chosen, chosen)
        accept = rank < (size_max - counts)[chosen]
        assign[pending[order[accept]]] = chosen[accept]
        counts += torch.bincount(chosen[accept], minlength=k)
        open_ &= counts < size_max
        pending = pending[order[~accept]]
    if size_min > 0:
        _fill_undersized(d, assign, counts, size_min)
    return assign


def _fill_undersized(
    d: torch.Tensor, assign: torch.Tensor, counts: torch.Tensor, size_min: int
) -> None:
    dist = d.detach().cpu().numpy()
    labels = assign.cpu().numpy().copy()
    sizes = counts.cpu().numpy().copy()
    for cluster in np.flatnonzero(sizes < size_min).tolist():
        candidates = np.flatnonzero((sizes[labels] > size_min) & (labels != cluster))
        extra = dist[candidates, cluster] - dist[candidates, labels[candidates]]  # cost of moving
        for point in candidates[np.argsort(extra, kind="stable")].tolist():
            if sizes[cluster] >= size_min:
                break
            donor = labels[point]
            if sizes[donor] > size_min:
                labels[point] = cluster
                sizes[donor] -= 1
                sizes[cluster] += 1
    assign.copy_(torch.from_numpy(labels))
    counts.copy_(torch.from_numpy(sizes))


def _check(x: torch.Tensor, k: int) -> None:
    if x.ndim != 2:
        raise ValueError(f"k-means needs an (N, d) matrix, got shape {tuple(x.shape)}")
    if k > x.shape[0]:
        raise ValueError(f"cannot make {k} clusters from {x.shape[0]} points")
