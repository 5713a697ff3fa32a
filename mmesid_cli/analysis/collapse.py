"""Embedding collapse (docs/method.md §1): the singular value spectrum of an item-token matrix.

An LLM4SR model turns each item into one token of the LLM's hidden size. If the token is a
linear projection of a d-dimensional embedding, the N × hidden matrix of all item tokens has
rank at most d: a 64-d collaborative table projected to 4096 dimensions uses at most 64 of them
(over 98% unused). With a non-linear projection the paper shows the same collapse from the
spectrum. For an N × d matrix X with singular values σ_1 ≥ … ≥ σ_r, r = min(N, d):

- effective rank (Roy & Vetterli, "The effective rank: a measure of effective
  dimensionality", EUSIPCO 2007): with the singular values normalised to sum to one
  (L1, p_k = σ_k / Σ_j σ_j), erank = exp(−Σ_k p_k ln p_k), 0 ln 0 = 0; 1 ≤ erank ≤ rank;
- energy dimensions: the smallest k with Σ_{j≤k} σ_j² / Σ_j σ_j² ≥ q (q = 0.90, 0.99);
- numerical rank: the number of σ_k > rtol · σ_1, by default rtol = max(N, d) · eps of the
  matrix's dtype (``numpy.linalg.matrix_rank``'s tolerance; eps(float32) = 1.19e-7): values
  below it cannot be told from the rounding of the stored numbers.

The matrix is not centred unless asked: the LLM sees the raw tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import svdvals

ENERGY_LEVELS = (0.90, 0.99)


@dataclass
class Spectrum:
    """The singular value spectrum of one matrix and the figures of collapse."""

    shape: tuple[int, int]
    singular_values: np.ndarray  # (min(N, d),) float64, descending
    effective_rank: float
    energy_dims: dict[float, int]
    rank: int  # numerical rank: singular values above tolerance
    rtol: float  # relative tolerance used
    tolerance: float  # rtol · σ_1
    centered: bool
    dtype: str  # dtype whose eps set the default tolerance
    extra: dict[str, object] = field(default_factory=dict)

    def as_dict(self, values: bool = True) -> dict[str, object]:
        out: dict[str, object] = {
            "shape": list(self.shape),
            "dtype": self.dtype,
            "centered": self.centered,
            "rank": self.rank,
            "rank_fraction": self.rank / self.shape[1] if self.shape[1] else None,
            "effective_rank": self.effective_rank,
            "effective_rank_fraction": self.effective_rank / self.shape[1]
            if self.shape[1]
            else None,
            "energy_dims": {f"{q:.2f}": k for q, k in self.energy_dims.items()},
            "rtol": self.rtol,
            "tolerance": self.tolerance,
            "sigma_max": float(self.singular_values[0]) if self.singular_values.size else 0.0,
            **self.extra,
        }
        if values:
            out["singular_values"] = self.singular_values
        return out


def effective_rank(singular_values: np.ndarray) -> float:
    """exp of the entropy of the L1-normalised singular values (Roy & Vetterli 2007)."""
    s = np.asarray(singular_values, dtype=np.float64)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def energy_dims(
    singular_values: np.ndarray, levels: Sequence[float] = ENERGY_LEVELS
) -> dict[float, int]:
    """For each q, the fewest leading singular directions holding a fraction q of Σσ²."""
    energy = np.asarray(singular_values, dtype=np.float64) ** 2
    total = energy.sum()
    if total <= 0:
        return {float(q): 0 for q in levels}
    cumulative = np.cumsum(energy) / total
    # a tiny slack so that e.g. exactly 90% is not missed by rounding
    return {
        float(q): int(min(len(energy), np.searchsorted(cumulative, q - 1e-12) + 1)) for q in levels
    }


def machine_epsilon(dtype: np.dtype | str) -> float:
    """eps of a float dtype by name, bfloat16 included (2⁻⁷); integers count as float64."""
    if str(dtype) == "bfloat16":
        return 2.0**-7
    dtype = np.dtype(dtype)
    return float(np.finfo(dtype if np.issubdtype(dtype, np.floating) else np.float64).eps)


def default_rtol(shape: tuple[int, int], dtype: np.dtype | str) -> float:
    return float(max(shape) * machine_epsilon(dtype))


def spectrum(
    matrix: np.ndarray,
    *,
    center: bool = False,
    rtol: float | None = None,
    dtype: str | None = None,
    energy: Sequence[float] = ENERGY_LEVELS,
) -> Spectrum:
    """The singular values of ``matrix`` (computed in float64) and the collapse figures.

    ``dtype`` names the precision the matrix was stored in (default: its own dtype); its
    machine epsilon sets the default tolerance (see the module docstring).
    """
    x = np.asarray(matrix)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("the matrix holds NaN or infinity")
    stored = str(dtype) if dtype is not None else str(x.dtype)
    x = x.astype(np.float64)
    if center:
        x = x - x.mean(axis=0, keepdims=True)
    values = svdvals(x, check_finite=False) if x.size else np.zeros(0)
    rtol = default_rtol(x.shape, stored) if rtol is None else float(rtol)
    sigma_max = float(values[0]) if values.size else 0.0
    tolerance = rtol * sigma_max
    return Spectrum(
        shape=(int(x.shape[0]), int(x.shape[1])),
        singular_values=values,
        effective_rank=effective_rank(values),
        energy_dims=energy_dims(values, energy),
        rank=int((values > tolerance).sum()) if sigma_max > 0 else 0,
        rtol=rtol,
        tolerance=tolerance,
        centered=center,
        dtype=stored,
    )


def random_projection(matrix: np.ndarray, dim: int, seed: int = 0) -> np.ndarray:
    """``matrix`` (N × d) times a d × ``dim`` Gaussian matrix with entries N(0, 1/d), in float32.

    The item tokens of a linear projection layer at initialisation (docs/method.md §1): whatever
    ``dim``, their rank cannot exceed d.
    """
    x = np.asarray(matrix, dtype=np.float32)
    if dim < 1:
        raise ValueError("the projection dimension must be at least 1")
    rng = np.random.default_rng(seed)
    weights = (rng.standard_normal((x.shape[1], dim)) / np.sqrt(x.shape[1])).astype(np.float32)
    return x @ weights
