"""Plain and balanced k-means: clusters found, size bounds kept, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmesid_cli.tokenizer.kmeans import (
    balanced_kmeans,
    balanced_size_bounds,
    capacity_assign,
    kmeans,
    kmeans_plus_plus,
)


def blobs(sizes: list[int], seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.arange(len(sizes), dtype=torch.float32)[:, None] * 10.0 * torch.ones(1, 3)
    x = torch.cat([centres[i] + 0.1 * torch.randn(n, 3, generator=g) for i, n in enumerate(sizes)])
    return x, np.repeat(np.arange(len(sizes)), sizes)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return all(len(set(b[a == label])) == 1 for label in set(a)) and len(set(a)) == len(set(b))


def test_plain_kmeans_recovers_separated_blobs() -> None:
    x, truth = blobs([20, 30, 25, 25])
    centres, labels = kmeans(x, 4, iters=10, seed=0)
    assert same_partition(labels.numpy(), truth)
    for label in range(4):
        assert torch.allclose(centres[label], x[labels == label].mean(dim=0), atol=1e-5)


def test_reference_size_bounds_for_beauty() -> None:
    # KMeansConstrained(size_min=min(N // 2K, 50), size_max=4 × size_min) in the reference
    assert balanced_size_bounds(12086, 256) == (23, 92)
    assert balanced_size_bounds(100, 8) == (6, 24)
    assert balanced_size_bounds(20, 8) == (1, 4)


def test_balanced_kmeans_keeps_cluster_sizes_within_bounds_on_skewed_data() -> None:
    x, _ = blobs([150, 10, 10, 10])
    _, plain = kmeans(x, 6, iters=10, seed=0)
    assert np.bincount(plain.numpy(), minlength=6).max() > 40  # unbalanced without the constraint
    _, labels = balanced_kmeans(x, 6, iters=5, seed=0, size_min=20, size_max=40)
    sizes = np.bincount(labels.numpy(), minlength=6)
    assert sizes.min() >= 20 and sizes.max() <= 40 and sizes.sum() == 180


def test_capacity_assign_respects_bounds_and_prefers_close_clusters() -> None:
    g = torch.Generator().manual_seed(1)
    d = torch.rand(50, 5, generator=g)
    labels = capacity_assign(d, 6, 12).numpy()
    sizes = np.bincount(labels, minlength=5)
    assert sizes.min() >= 6 and sizes.max() <= 12
    # loose bounds give each point its nearest cluster
    assert np.array_equal(capacity_assign(d, 0, 50).numpy(), d.argmin(dim=1).numpy())


def test_balanced_kmeans_rejects_impossible_bounds() -> None:
    x, _ = blobs([5, 5])
    with pytest.raises(ValueError):
        balanced_kmeans(x, 3, size_min=4, size_max=5)
    with pytest.raises(ValueError):
        kmeans(x, 11)


def test_kmeans_is_deterministic_for_a_seed() -> None:
    x = torch.randn(60, 4, generator=torch.Generator().manual_seed(3))
    a, la = balanced_kmeans(x, 5, seed=7)
    b, lb = balanced_kmeans(x, 5, seed=7)
    assert torch.equal(a, b) and torch.equal(la, lb)


def test_kmeans_plus_plus_picks_distinct_far_points() -> None:
    x, _ = blobs([10, 10, 10])
    centres = kmeans_plus_plus(x, 3, torch.Generator().manual_seed(0))
    blob_of = (centres[:, 0] / 10).round().tolist()
    assert sorted(blob_of) == [0.0, 1.0, 2.0]
