"""SID quality figures (NumPy) and the encode-everything pass that produces them.

Per modality: per-level code usage, perplexity and dead codes; unique-SID fraction, collision
rate (items that share their SID with an earlier item, over all items: the reference's
definition) and the largest collision group; reconstruction MSE / cosine and the MMD of the
decoder outputs against the inputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from mmesid_cli.tokenizer.losses import mmd2
from mmesid_cli.tokenizer.rqvae import MMRQVAE

if TYPE_CHECKING:
    from mmesid_cli.artifacts.sids import Sids
    from mmesid_cli.tokenizer.train import ItemInputs


def level_stats(codes: np.ndarray, codebook_size: int) -> list[dict[str, float]]:
    """Per level: codes used (count and fraction of K), perplexity exp(H), dead codes."""
    out = []
    for level in range(codes.shape[1]):
        counts = np.bincount(codes[:, level], minlength=codebook_size).astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        used = int((counts > 0).sum())
        out.append(
            {
                "level": level + 1,
                "used": used,
                "usage": used / codebook_size,
                "perplexity": float(np.exp(-(p * np.log(p)).sum())),
                "dead": codebook_size - used,
            }
        )
    return out


def collision_stats(codes: np.ndarray) -> dict[str, float]:
    """Unique-SID fraction, collision rate and the largest group of items sharing one SID."""
    n = codes.shape[0]
    _, counts = np.unique(codes, axis=0, return_counts=True)
    unique = int(counts.size)
    return {
        "items": n,
        "unique_sids": unique,
        "unique_sid_fraction": unique / n if n else 1.0,
        "collision_rate": (n - unique) / n if n else 0.0,
        "colliding_items": int(counts[counts > 1].sum()),
        "largest_collision_group": int(counts.max()) if n else 0,
    }


def dedup_suffix(codes: np.ndarray) -> np.ndarray:
    """Append a level holding each item's rank among the items of its SID (0, 1, …).

    (N, L) → (N, L + 1); every row becomes unique; items without a collision get 0.
    The extra column has no codebook.
    """
    _, inverse = np.unique(codes, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    sorted_groups = inverse[order]
    starts = np.searchsorted(sorted_groups, sorted_groups, side="left")
    rank = np.empty_like(inverse)
    rank[order] = np.arange(inverse.size) - starts
    return np.concatenate([codes, rank[:, None].astype(codes.dtype)], axis=1)


@torch.no_grad()
def encode_items(
    model: MMRQVAE,
    inputs: dict[str, np.ndarray],
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
) -> dict[str, np.ndarray]:
    """Nearest-code SIDs of every item: {modality: (N, L) int64}."""
    model.eval().to(device)
    codes = {}
    for m in model.modalities:
        x = torch.from_numpy(np.ascontiguousarray(inputs[m]))
        parts = [
            model.encode(m, x[i : i + batch_size].to(device)).cpu()
            for i in range(0, x.shape[0], batch_size)
        ]
        codes[m] = torch.cat(parts).numpy().astype(np.int64)
    return codes


@torch.no_grad()
def reconstruction_stats(
    model: MMRQVAE,
    modality: str,
    x: np.ndarray,
    codes: np.ndarray,
    batch_size: int = 1024,
    alphas: tuple[float, ...] = (0.5,),
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Reconstruction from the SIDs: mean squared error (per element), mean cosine, and the
    MMD² of decoder outputs against inputs averaged over consecutive batches of ``batch_size``.
    """
    sq_err, cos, mmds, sizes = 0.0, 0.0, [], []
    for i in range(0, x.shape[0], batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])).to(device)
        x_hat = model.decode(modality, torch.from_numpy(codes[i : i + batch_size]).to(device))
        sq_err += float((x_hat - xb).pow(2).sum())
        cos += float(torch.nn.functional.cosine_similarity(x_hat, xb, dim=1).sum())
        if xb.shape[0] >= 2:
            mmds.append(float(mmd2(x_hat, xb, alphas)))
            sizes.append(xb.shape[0])
    n = x.shape[0]
    return {
        "recon_mse": sq_err / (n * x.shape[1]),
        "recon_cosine": cos / n,
        "mmd": float(np.average(mmds, weights=sizes)) if mmds else float("nan"),
    }


def modality_report(
    model: MMRQVAE,
    modality: str,
    x: np.ndarray,
    codes: np.ndarray,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
) -> dict[str, object]:
    """Every figure of one modality (codes: the (N, L) quantised codes, without a suffix)."""
    cfg = model.config
    return {
        **reconstruction_stats(model, modality, x, codes, batch_size, cfg.mmd_alphas, device),
        **collision_stats(codes),
        "levels": level_stats(codes, cfg.codebook_size),
    }


def build_sids(
    model: MMRQVAE,
    data: ItemInputs,
    item_ids: list[str],
    modalities: list[str],
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    dedup: str = "none",
    file_attrs: dict[str, object] | None = None,
) -> tuple[Sids, dict[str, dict[str, object]]]:
    """Every item's SIDs, ready for ``sids.h5``, and the figures of each modality.

    The figures (:func:`modality_report`) are measured on the items that have the modality's
    input, on the codes before a ``dedup="suffix"`` column is appended; the collision
    figures go into the file's attrs too. ``file_attrs``: the provenance to record.
    """
    from mmesid_cli.artifacts.sids import Sids

    if dedup not in ("none", "suffix"):
        raise ValueError(f"dedup must be 'none' or 'suffix', not {dedup!r}")
    codes = encode_items(model, data.inputs, batch_size, device)
    figures: dict[str, dict[str, object]] = {}
    for m in modalities:
        rows = data.rows(m)
        figures[m] = modality_report(
            model, m, data.inputs[m][rows], codes[m][rows], batch_size, device
        )
        figures[m]["items_without_input"] = len(item_ids) - int(rows.size)
    if dedup == "suffix":
        codes = {m: dedup_suffix(c) for m, c in codes.items()}
    attrs: dict[str, dict[str, object]] = {
        m: {
            "codebook_size": model.config.codebook_size,
            "levels": model.config.levels,
            "dedup": dedup,
            "unique_sid_fraction": figures[m]["unique_sid_fraction"],
            "collision_rate": figures[m]["collision_rate"],
            "largest_collision_group": figures[m]["largest_collision_group"],
        }
        for m in modalities
    }
    sids = Sids(item_ids=item_ids, codes=codes, attrs=attrs, file_attrs=dict(file_attrs or {}))
    return sids, figures
