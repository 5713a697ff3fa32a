"""Sinkhorn assignment against the reference's exp-domain algorithm; balancing effect."""

from __future__ import annotations

import pytest
import torch

from mmesid_cli.tokenizer import sinkhorn
from mmesid_cli.tokenizer.sinkhorn import centre_distances, sinkhorn_assign


def reference_sinkhorn(distances: torch.Tensor, epsilon: float, iters: int) -> torch.Tensor:
    """LC-Rec / MME-SID ``sinkhorn_algorithm`` on centred distances, as published (float64)."""
    q = torch.exp(-centre_distances(distances).double() / epsilon)
    b, k = q.shape
    q /= q.sum()
    for _ in range(iters):
        q /= q.sum(dim=0, keepdim=True)
        q /= k
        q /= q.sum(dim=1, keepdim=True)
        q /= b
    return (q * b).argmax(dim=1)


def test_matches_the_reference_algorithm(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(0)
    d = torch.rand(64, 16, generator=g) * 3
    for epsilon in (0.003, 0.05):
        assert torch.equal(sinkhorn_assign(d, epsilon, 50), reference_sinkhorn(d, epsilon, 50))
    monkeypatch.setattr(sinkhorn, "_EXP_LIMIT", 0.0)  # the log-domain path, for tiny ε
    for epsilon in (0.003, 0.05):
        assert torch.equal(sinkhorn_assign(d, epsilon, 50), reference_sinkhorn(d, epsilon, 50))


def test_spreads_items_that_all_prefer_one_code() -> None:
    g = torch.Generator().manual_seed(1)
    d = torch.rand(64, 8, generator=g)
    d[:, 0] -= 1.0  # code 0 is everyone's nearest
    assert set(d.argmin(dim=1).tolist()) == {0}
    counts = torch.bincount(sinkhorn_assign(d, 0.003, 50), minlength=8)
    assert int(counts.max()) <= 16 and int((counts > 0).sum()) == 8


def test_centre_distances_maps_onto_minus_one_one() -> None:
    c = centre_distances(torch.tensor([[2.0, 4.0], [6.0, 3.0]]))
    assert abs(float(c.min()) + 1) < 1e-4 and abs(float(c.max()) - 1) < 1e-4
