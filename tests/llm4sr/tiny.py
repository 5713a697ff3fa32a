"""Tiny inputs for fine-tuning tests: backbones, embeddings, a tokeniser and SIDs.

Everything is built in the test with mmesid's own writers, in the tokeniser engineer's
layout: ``codebook.<modality>.<level>`` (K × e_dim, level 1-based) in a kind-"tokenizer"
safetensors whose config names ``modalities``, ``levels``, ``codebook_size``, ``e_dim`` and
``input_dims``; ``/codes/<modality>`` (N × L) in sids.h5, rows in a different order from
embeddings.h5 (items are matched by id).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mmesid_cli.artifacts.embeddings import Embeddings, EmbeddingTable, write_embeddings
from mmesid_cli.artifacts.sids import Sids, write_sids
from mmesid_cli.artifacts.weights import write_weights
from mmesid_cli.llm4sr.backbone import write_tiny_backbone
from tests.conftest import write_tiny_dataset

HIDDEN = 32
DIMS = {"collab": 8, "text": 12}
LEVELS, CODES = 2, 8


@dataclass
class TinyFiles:
    items: Path
    sequences: Path
    embeddings: Path
    tokenizer: Path
    sids: Path
    item_ids: list[str]
    codes: dict[str, np.ndarray]  # embedding row order
    codebooks: dict[str, list[np.ndarray]]


def tiny_backbone(folder: Path, architecture: str = "llama") -> Path:
    if not (folder / "config.json").exists():
        write_tiny_backbone(folder, architecture, hidden=HIDDEN)
    return folder


def tiny_files(
    folder: Path,
    e_dim: int = HIDDEN,
    modalities: tuple[str, ...] = ("collab", "text"),
    tokenizer_dims: dict[str, int] | None = None,
    drop_sid_items: int = 0,
    extra_sid_items: int = 0,
    seed: int = 0,
) -> TinyFiles:
    """Write the four inputs of ``mmesid finetune`` (plus items.jsonl) into ``folder``."""
    rng = np.random.default_rng(seed)
    items, sequences = write_tiny_dataset(folder / "data")
    item_ids = [f"I{i:03d}" for i in range(30)]
    tables = {
        m: EmbeddingTable(values=rng.normal(size=(30, d)).astype(np.float32))
        for m, d in DIMS.items()
    }
    write_embeddings(folder / "embeddings.h5", Embeddings(item_ids=item_ids, tables=tables))
    codebooks = {
        m: [rng.normal(size=(CODES, e_dim)).astype(np.float32) for _ in range(LEVELS)]
        for m in modalities
    }
    tensors = {
        f"codebook.{m}.{level}": torch.from_numpy(cb)
        for m, books in codebooks.items()
        for level, cb in enumerate(books, start=1)
    }
    config = {
        "modalities": list(modalities),
        "levels": LEVELS,
        "codebook_size": CODES,
        "e_dim": e_dim,
        "input_dims": tokenizer_dims or {m: DIMS[m] for m in modalities},
    }
    write_weights(folder / "tokenizer.safetensors", tensors, kind="tokenizer", config=config)
    codes = {m: rng.integers(0, CODES, size=(30, LEVELS)).astype(np.int64) for m in modalities}
    order = rng.permutation(30)[drop_sid_items:]  # sids.h5 lists items in another order
    sid_ids = [item_ids[i] for i in order] + [f"NEW{i}" for i in range(extra_sid_items)]
    sid_codes = {
        m: np.concatenate([c[order], np.zeros((extra_sid_items, LEVELS), np.int64)])
        for m, c in codes.items()
    }
    write_sids(folder / "sids.h5", Sids(item_ids=sid_ids, codes=sid_codes))
    return TinyFiles(
        items,
        sequences,
        folder / "embeddings.h5",
        folder / "tokenizer.safetensors",
        folder / "sids.h5",
        item_ids,
        codes,
        codebooks,
    )
