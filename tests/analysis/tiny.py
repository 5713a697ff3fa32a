"""Tiny formula-9 fixtures: tables, codebooks that reproduce them exactly, and artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmesid_cli.artifacts.embeddings import Embeddings, EmbeddingTable, write_embeddings
from mmesid_cli.artifacts.sids import Sids, write_sids
from mmesid_cli.artifacts.weights import write_weights


def dyadic_table(n_items: int, dim: int, seed: int = 0) -> np.ndarray:
    """Random float32 rows in multiples of 1/64 (sums of such rows are exact in float32)."""
    rng = np.random.default_rng(seed)
    return (rng.integers(-128, 129, size=(n_items, dim)) / 64.0).astype(np.float32)


def exact_codebooks(table: np.ndarray, coarse: float = 1.0) -> tuple[list[np.ndarray], np.ndarray]:
    """Two levels whose codeword sum reproduces ``table`` bit for bit.

    Level 1: the distinct rows of ``table`` rounded down to multiples of ``coarse``;
    level 2: one residual codeword per item. Both are exact for dyadic tables.
    """
    rounded = np.floor(table / coarse) * coarse
    level1, first = np.unique(rounded, axis=0, return_inverse=True)
    level2 = table - rounded
    codes = np.stack([first.reshape(-1), np.arange(table.shape[0])], axis=1)
    return [level1.astype(np.float32), level2.astype(np.float32)], codes


def random_codebooks(n_items: int, dim: int, levels: int = 3, size: int = 16, seed: int = 1):
    rng = np.random.default_rng(seed)
    books = [rng.standard_normal((size, dim)).astype(np.float32) for _ in range(levels)]
    return books, rng.integers(0, size, size=(n_items, levels))


def write_codebook_file(
    path: Path, books: dict[str, list[np.ndarray]], kind: str = "tokenizer"
) -> Path:
    tensors = {
        f"codebook.{modality}.{level}": torch.from_numpy(np.ascontiguousarray(book))
        for modality, levels in books.items()
        for level, book in enumerate(levels, start=1)
    }
    tensors["encoder.weight"] = torch.zeros(2, 2)  # other weights are ignored
    write_weights(path, tensors, kind=kind, config={"levels": len(next(iter(books.values())))})
    return path


def write_embedding_file(path: Path, item_ids: list[str], tables: dict[str, np.ndarray]) -> Path:
    write_embeddings(
        path,
        Embeddings(
            item_ids=list(item_ids),
            tables={name: EmbeddingTable(values=values) for name, values in tables.items()},
        ),
    )
    return path


def write_sid_file(
    path: Path,
    item_ids: list[str],
    codes: dict[str, np.ndarray],
    order: np.ndarray | None = None,
    attrs: dict[str, dict[str, object]] | None = None,
) -> Path:
    """sids.h5 with rows in ``order`` (a permutation of the items), to test id matching."""
    order = np.arange(len(item_ids)) if order is None else np.asarray(order)
    write_sids(
        path,
        Sids(
            item_ids=[item_ids[i] for i in order],
            codes={name: np.asarray(c)[order] for name, c in codes.items()},
            attrs=attrs or {},
        ),
    )
    return path
