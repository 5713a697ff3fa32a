"""The residual quantiser of one modality (docs/method.md §3).

Level l picks the code nearest (squared L2) to the current residual r_l; r_1 = z,
r_{l+1} = r_l − c_l, z_q = Σ_l c_l. Straight-through: the value passed on is
z + sg(z_q − z), so the decoder's gradient reaches the encoder unchanged.

The VQ loss of level l is ‖sg(r_l) − c_l‖² + β‖r_l − sg(c_l)‖²: the first term trains
codebook l only, the second pulls the encoder towards the codes. By default r_l stays a
function of z (r_{l+1} = r_l − sg(c_l)), so every level's commitment reaches the encoder,
as the formula says; the reference subtracts straight-through values, which detaches the
residuals after level 1 (``commit_all_levels=False`` reproduces it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mmesid_cli.analysis.concordance import sid_space_tables
from mmesid_cli.tokenizer.kmeans import balanced_kmeans, kmeans
from mmesid_cli.tokenizer.losses import pairwise_sq_dists, vq_loss
from mmesid_cli.tokenizer.sinkhorn import sinkhorn_assign


@dataclass
class Quantized:
    z_q: torch.Tensor  # (B, e_dim) straight-through quantised latent; its value is Σ_l c_l
    codes: torch.Tensor  # (B, L) code index per level
    vq_loss: torch.Tensor  # () mean over levels of ‖sg(r_l) − c_l‖² + β‖r_l − sg(c_l)‖²


def nearest_codes(residual: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """argmin_k ‖r_i − C_k‖² for each row. (B, e), (K, e) → (B,)."""
    return pairwise_sq_dists(residual, codebook).argmin(dim=1)


class ResidualQuantizer(nn.Module):
    """L codebooks of K × e_dim, used one after the other on the residual."""

    def __init__(self, levels: int, codebook_size: int, e_dim: int) -> None:
        super().__init__()
        # zero until k-means initialisation (or loading) fills them
        self.codebooks = nn.ParameterList(
            [nn.Parameter(torch.zeros(codebook_size, e_dim)) for _ in range(levels)]
        )

    @property
    def levels(self) -> int:
        return len(self.codebooks)

    def forward(
        self,
        z: torch.Tensor,
        beta: float = 0.25,
        sinkhorn_levels: frozenset[int] | set[int] = frozenset(),
        sinkhorn_epsilon: float = 0.003,
        sinkhorn_iters: int = 50,
        commit_all_levels: bool = True,
    ) -> Quantized:
        """Quantise z (B, e_dim). Levels in ``sinkhorn_levels`` (1-based) use balanced assignment.

        commit_all_levels: r_{l+1} = r_l − sg(c_l) keeps the residuals a function of z, so the
        commitment term of every level reaches the encoder (the formula; textbook RQ-VAE).
        False reproduces the reference, whose residuals after level 1 are detached.
        """
        residual = z  # r_1
        quantized = torch.zeros_like(z)  # Σ_l c_l, no gradient (codes learn from the VQ loss)
        codes, losses = [], []
        for level, codebook in enumerate(self.codebooks, start=1):
            with torch.no_grad():
                if level in sinkhorn_levels and self.training:
                    d = pairwise_sq_dists(residual, codebook)  # (B, K)
                    idx = sinkhorn_assign(d, sinkhorn_epsilon, sinkhorn_iters)
                else:
                    idx = nearest_codes(residual, codebook)  # (B,)
            code = codebook[idx]  # c_l, (B, e_dim)
            losses.append(vq_loss(residual, code, beta))
            if commit_all_levels:
                residual = residual - code.detach()  # r_{l+1} = r_l − sg(c_l)
            else:
                residual = (residual - code).detach()
            quantized = quantized + code.detach()
            codes.append(idx)
        z_q = z + (quantized - z).detach()  # straight-through: value Σ_l c_l, gradient to z
        return Quantized(
            z_q=z_q, codes=torch.stack(codes, dim=1), vq_loss=torch.stack(losses).mean()
        )

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest-code SIDs (no Sinkhorn, as the reference at inference). (B, e) → (B, L)."""
        residual, codes = z, []
        for codebook in self.codebooks:
            idx = nearest_codes(residual, codebook)
            residual = residual - codebook[idx]
            codes.append(idx)
        return torch.stack(codes, dim=1)

    @torch.no_grad()
    def init_kmeans(
        self, z: torch.Tensor, method: str = "balanced", iters: int = 10, seed: int = 0
    ) -> None:
        """Initialise level by level with k-means on the residuals of the whole item set.

        z: (N, e_dim), every item's latent. Level l is clustered on r_l; r_{l+1} subtracts
        each item's nearest new code.
        """
        residual = z
        for level, codebook in enumerate(self.codebooks, start=1):
            fit = balanced_kmeans if method == "balanced" else kmeans
            centers, _ = fit(residual, codebook.shape[0], iters=iters, seed=seed + level)
            codebook.copy_(centers)
            residual = residual - codebook[nearest_codes(residual, codebook)]

    def reset_codes(self, level: int, rows: torch.Tensor, values: torch.Tensor) -> None:
        """Replace codes ``rows`` of ``level`` (1-based) by ``values`` (dead-code restart)."""
        with torch.no_grad():
            self.codebooks[level - 1][rows] = values.to(self.codebooks[level - 1].dtype)


def quantized_latents(codebooks: list, codes: np.ndarray) -> np.ndarray:
    """ê = Σ_l codebook_l[k_l] for every item (docs/method.md §4). Returns a NumPy (N, e_dim) array.

    codebooks: L tensors or arrays of K × e_dim (level order); codes: (N, ≥L) integers, column
    l−1 indexing codebook l. A deduplication suffix column beyond L is ignored.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] < len(codebooks):
        raise ValueError(f"codes of shape {codes.shape} do not have {len(codebooks)} levels")
    tables = [np.asarray(c.detach().cpu() if isinstance(c, torch.Tensor) else c) for c in codebooks]
    return sid_space_tables(tables, codes[:, : len(tables)])[-1]
