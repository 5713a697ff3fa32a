"""Sinkhorn-balanced code assignment (docs/method.md §3: the last level, ε = 0.003, 50 iterations).

As in the reference (after LC-Rec): the B × K distances are centred and scaled to [−1, 1],
Q = exp(−d / ε) is rescaled alternately so that every code receives 1/K of the mass and every
item 1/B, and each item takes the code of largest Q. It runs in float64, like the
reference, and moves to the log domain when ε is too small for exp() (below ~0.0017).
"""

from __future__ import annotations

import math

import torch

_EXP_LIMIT = 600.0  # exp(600) ≈ 4e260: the matrix and its sums stay finite in float64


def centre_distances(distances: torch.Tensor) -> torch.Tensor:
    """Map distances affinely onto [−1, 1] (the reference's ``center_distance_for_constraint``)."""
    high, low = distances.max(), distances.min()
    middle = (high + low) / 2
    amplitude = high - middle + 1e-5
    return (distances - middle) / amplitude


@torch.no_grad()
def sinkhorn_assign(
    distances: torch.Tensor, epsilon: float = 0.003, iters: int = 50
) -> torch.Tensor:
    """Balanced assignment of B items to K codes from their (B, K) distances → (B,) codes."""
    batch, codes = distances.shape
    scaled = -centre_distances(distances.double()) / epsilon  # (B, K), within ±1/ε
    if 1.0 / epsilon < _EXP_LIMIT:
        # The reference's iteration. Its constant factors 1/K and 1/B rescale the whole matrix
        # and are undone by the next normalisation, so they are left out: same argmax.
        q = torch.exp(scaled)
        for _ in range(iters):
            q.div_(q.sum(dim=0, keepdim=True))  # every code (column) the same mass
            q.div_(q.sum(dim=1, keepdim=True))  # every item (row) the same mass
        return q.argmax(dim=1)
    # ε too small for exp() in float64: the same iteration in the log domain (slower)
    log_q = scaled - torch.logsumexp(scaled.flatten(), dim=0)
    for _ in range(iters):
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(codes)
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - math.log(batch)
    return log_q.argmax(dim=1)
