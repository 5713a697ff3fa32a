"""The tokeniser's losses (docs/method.md §3): MMD reconstruction, VQ, InfoNCE alignment.

The MMD is computed from pairwise squared distances only (three n × n blocks), never from an
n × n × d difference tensor: at n = 1024, d = 4096 it needs a few tens of megabytes where
the reference's broadcast needs ~69 GB (benchmarks/bench_mmd.py measures it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def pairwise_sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖a_i − b_j‖² for every pair, as ‖a‖² + ‖b‖² − 2abᵀ (clamped at 0). (n, d), (m, d) → (n, m)."""
    a_sq = torch.linalg.vector_norm(a, dim=1, keepdim=True).pow(2)  # (n, 1), no (n, d) temporary
    b_sq = torch.linalg.vector_norm(b, dim=1, keepdim=True).pow(2).T  # (1, m)
    return (a_sq + b_sq - 2.0 * (a @ b.T)).clamp_min_(0.0)


def mean_pairwise_sq_dist(*parts: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Mean of ‖u − v‖² over all ordered pairs (u, v) of the rows of the stacked ``parts``, the
    diagonal included.

    Closed form in O(n d): (1/n²) Σ_ij ‖z_i − z_j‖² = 2 · (1/n) Σ_i ‖z_i − z̄‖², summed over
    row chunks so that no copy of the stacked rows is made.
    """
    n = sum(p.shape[0] for p in parts)
    mean = sum(p.sum(dim=0) for p in parts) / n  # z̄, (d,)
    total = sum(
        torch.linalg.vector_norm(p[i : i + chunk] - mean, dim=1).pow(2).sum()
        for p in parts
        for i in range(0, p.shape[0], chunk)
    )
    return 2.0 * total / n


def gaussian_bandwidths(x_hat: torch.Tensor, x: torch.Tensor, alphas: Sequence[float]) -> list:
    """σ² = α · mean ‖u − v‖² over the joined batch [X̂; X], detached (docs/method.md §3).

    The mean runs over the full 2n × 2n matrix, diagonal included, as the reference's
    ``tllib`` GaussianKernel does.
    """
    with torch.no_grad():
        mean = mean_pairwise_sq_dist(x_hat, x)
        mean = mean.clamp_min(torch.finfo(mean.dtype).tiny)
    return [alpha * mean for alpha in alphas]


def mmd2(x_hat: torch.Tensor, x: torch.Tensor, alphas: Sequence[float] = (0.5,)) -> torch.Tensor:
    """Unbiased squared MMD between two batches, Gaussian kernel(s) (docs/method.md §3).

        MMD² = 1/(n(n−1)) Σ_{i≠j} k(x̂_i, x̂_j) + 1/(n(n−1)) Σ_{i≠j} k(x_i, x_j)
               − 2/n² Σ_{i,j} k(x̂_i, x_j),           k(a, b) = Σ_α exp(−‖a − b‖² / (2σ_α²))

    x_hat, x: (n, d) with n ≥ 2. For x_hat = x it equals 2/n · (mean off-diagonal kernel − 1)
    summed over kernels, i.e. |MMD²| < 2·(#kernels)/n: zero up to the O(1/n) of the estimator.
    """
    if x_hat.shape != x.shape or x.ndim != 2:
        raise ValueError(
            f"mmd2 needs two (n, d) batches of one shape, got {x_hat.shape}, {x.shape}"
        )
    n = x.shape[0]
    if n < 2:
        raise ValueError("mmd2 needs at least two rows")
    d_hh = pairwise_sq_dists(x_hat, x_hat)  # (n, n)
    d_xx = pairwise_sq_dists(x, x)  # (n, n)
    d_hx = pairwise_sq_dists(x_hat, x)  # (n, n)
    total = x.new_zeros(())
    for sigma2 in gaussian_bandwidths(x_hat, x, alphas):
        scale = -0.5 / sigma2
        # Σ_{i≠j} = Σ_{i,j} − n, since k(a, a) = 1 on the diagonal.
        k_hh = torch.exp(d_hh * scale).sum() - n
        k_xx = torch.exp(d_xx * scale).sum() - n
        k_hx = torch.exp(d_hx * scale).sum()
        total = total + (k_hh + k_xx) / (n * (n - 1)) - 2.0 * k_hx / (n * n)
    return total


def reconstruction_loss(
    kind: str, x_hat: torch.Tensor, x: torch.Tensor, alphas: Sequence[float]
) -> torch.Tensor:
    """Rec(x̂, x): ``mmd`` (the paper) or ``mse`` (its ablation; mean over all elements)."""
    if kind == "mmd":
        return mmd2(x_hat, x, alphas)
    if kind == "mse":
        return F.mse_loss(x_hat, x)
    raise ValueError(f"unknown reconstruction loss {kind!r}")


def vq_loss(residual: torch.Tensor, code: torch.Tensor, beta: float) -> torch.Tensor:
    """‖sg(r_l) − c_l‖² + β‖r_l − sg(c_l)‖² for one level, each a mean over elements."""
    codebook_term = F.mse_loss(code, residual.detach())
    commitment_term = F.mse_loss(residual, code.detach())
    return codebook_term + beta * commitment_term


def info_nce(query: torch.Tensor, key: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """InfoNCE, one direction: row i of ``key`` is the positive of row i of ``query``.

    Cosine similarity over temperature; the other rows of the batch are the negatives
    (docs/method.md §3: collab latent as query, text / image latent as key). (n, d), (n, d) → ().
    """
    logits = F.normalize(query, dim=-1) @ F.normalize(key, dim=-1).T / temperature  # (n, n)
    labels = torch.arange(query.shape[0], device=query.device)
    return F.cross_entropy(logits, labels)
