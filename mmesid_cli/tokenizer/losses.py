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


def _scaled_sq_dists_(a, b, a_sq, b_sq, scale: float = 1.0) -> torch.Tensor:  # noqa: ANN001
    """scale · ‖a_i − b_j‖² from precomputed squared norms, by one fused addmm and in-place
    adds: (n, m). The distance is clamped at 0 (the scaled value at 0 from scale's side)."""
    out = torch.addmm((scale * b_sq)[None, :], a, b.T, alpha=-2.0 * scale)
    out.add_((scale * a_sq)[:, None])
    return out.clamp_max_(0.0) if scale < 0 else out.clamp_min_(0.0)


def _sum64(block: torch.Tensor) -> torch.Tensor:
    """Sum of an (n, m) block in float64: rows summed in the block's precision (m terms each,
    pairwise), the n row sums in float64, without a float64 copy of the block."""
    return block.sum(dim=1).sum(dtype=torch.float64)


def _kernel_(a, b, a_sq, b_sq, scale: float) -> torch.Tensor:  # noqa: ANN001
    """exp(scale · ‖a_i − b_j‖²), scale < 0, in the buffer of its exponent: (n, m)."""
    return _scaled_sq_dists_(a, b, a_sq, b_sq, scale).exp_()


class _MMD2(torch.autograd.Function):
    """MMD² with a hand-written backward (no autograd graph over the n × n blocks).

    Forward: the three distance blocks, each turned into its kernel sum in place; the sums
    are accumulated in float64, since MMD² is a small difference of three large sums.
    Backward, with s = −1/(2σ²) and the weights c = 1/(n(n−1)), 2/n² of the estimator:

        ∂MMD²/∂x̂_p = Σ_j B_pj (x̂_p − x̂_j) + Σ_j B'_pj (x̂_p − x_j),
        B = 4 s c Σ_α K_hh,   B' = −2 s (2/n²) Σ_α K_hx

    i.e. two n × n × d matmuls (the same for x when it needs a gradient). The weight blocks
    are kept from the forward only for the inputs that need a gradient.
    """

    @staticmethod
    def forward(ctx, x_hat, x, scales):  # noqa: ANN001, ANN205
        n = x.shape[0]
        hh_sq = x_hat.pow(2).sum(dim=1)
        xx_sq = x.pow(2).sum(dim=1)
        c_same, c_cross = 1.0 / (n * (n - 1)), 2.0 / (n * n)
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        saved: dict[str, torch.Tensor | None] = {"hh": None, "hx": None, "xx": None}
        grad_hat, grad_x = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        blocks = (
            ("hh", x_hat, x_hat, hh_sq, hh_sq, c_same, -float(n) * c_same, grad_hat),
            ("xx", x, x, xx_sq, xx_sq, c_same, -float(n) * c_same, grad_x),
            ("hx", x_hat, x, hh_sq, xx_sq, -c_cross, 0.0, grad_hat or grad_x),
        )
        for name, a, b, a_sq, b_sq, weight, offset, keep in blocks:
            if len(scales) == 1:  # one kernel: exponent, kernel and weights in one buffer
                scale = float(scales[0])
                kernel = _kernel_(a, b, a_sq, b_sq, scale)
                total += weight * _sum64(kernel) + offset
                saved[name] = kernel.mul_(2.0 * scale * weight) if keep else None
                continue
            dist = _scaled_sq_dists_(a, b, a_sq, b_sq)
            grad_weights = torch.zeros_like(dist) if keep else None
            last = len(scales) - 1
            for k, scale in enumerate(scales.tolist()):
                # the last kernel reuses the distance block's memory
                kernel = dist.mul_(scale).exp_() if k == last else torch.exp(dist * scale)
                total += weight * _sum64(kernel)
                if grad_weights is not None:
                    grad_weights.add_(kernel, alpha=2.0 * scale * weight)
            total += offset * len(scales)  # the diagonal's k(a, a) = 1 is not part of Σ_{i≠j}
            saved[name] = grad_weights
        ctx.save_for_backward(x_hat, x, saved["hh"], saved["hx"], saved["xx"])
        return total.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        x_hat, x, w_hh, w_hx, w_xx = ctx.saved_tensors
        grad_hat = grad_x = None
        if ctx.needs_input_grad[0]:
            # within-batch pairs count twice (as (p, j) and (j, p)); cross pairs once
            rows = 2.0 * w_hh.sum(dim=1) + w_hx.sum(dim=1)
            grad_hat = torch.addmm(rows[:, None] * x_hat, w_hh, x_hat, alpha=-2.0)
            grad_hat = torch.addmm(grad_hat, w_hx, x, alpha=-1.0).mul_(grad_out)
        if ctx.needs_input_grad[1]:
            rows = 2.0 * w_xx.sum(dim=1) + w_hx.sum(dim=0)
            grad_x = torch.addmm(rows[:, None] * x, w_xx, x, alpha=-2.0)
            grad_x = torch.addmm(grad_x, w_hx.T, x_hat, alpha=-1.0).mul_(grad_out)
        return grad_hat, grad_x, None


def mmd2(x_hat: torch.Tensor, x: torch.Tensor, alphas: Sequence[float] = (0.5,)) -> torch.Tensor:
    """Unbiased squared MMD between two batches, Gaussian kernel(s) (docs/method.md §3).

        MMD² = 1/(n(n−1)) Σ_{i≠j} k(x̂_i, x̂_j) + 1/(n(n−1)) Σ_{i≠j} k(x_i, x_j)
               − 2/n² Σ_{i,j} k(x̂_i, x_j),           k(a, b) = Σ_α exp(−‖a − b‖² / (2σ_α²))

    x_hat, x: (n, d) with n ≥ 2. For x_hat = x it equals 2/n · (mean off-diagonal kernel − 1)
    summed over kernels, i.e. |MMD²| < 2·(#kernels)/n: zero up to the O(1/n) of the estimator.
    The bandwidths are detached. Half-precision inputs are computed in float32; the three
    kernel sums are accumulated in float64 (benchmarks/bench_mmd.py states the error against
    a float64 computation).
    """
    if x_hat.shape != x.shape or x.ndim != 2:
        raise ValueError(
            f"mmd2 needs two (n, d) batches of one shape, got {x_hat.shape}, {x.shape}"
        )
    if x.shape[0] < 2:
        raise ValueError("mmd2 needs at least two rows")
    dtype = x.dtype if x.dtype == torch.float64 else torch.float32
    with torch.autocast(x.device.type, enabled=False):
        x_hat_c, x_c = x_hat.to(dtype), x.to(dtype)
        sigma2 = gaussian_bandwidths(x_hat_c, x_c, alphas)
        scales = torch.stack([-0.5 / s for s in sigma2]).detach().cpu().double()
        return _MMD2.apply(x_hat_c, x_c, scales).to(x_hat.dtype)


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
