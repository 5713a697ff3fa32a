"""``embeddings.h5``: one row per item, one table per modality (docs/formats.md).

Layout: ``/item_ids`` (N UTF-8 strings, the row order of every table),
``/embeddings/<modality>`` (N × d float32, attrs: encoder, source, normalised, …),
optional ``/present/<modality>`` (N bool: False where an item had no input, e.g. no
image). Root attrs ``format = "mmesid.embeddings"`` and ``format_version``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from mmesid_cli import __version__
from mmesid_cli.artifacts.atomic import atomic_path
from mmesid_cli.artifacts.h5 import attrs_to_dict, open_h5, read_item_ids, write_item_ids
from mmesid_cli.errors import UserError

FORMAT = "mmesid.embeddings"
FORMAT_VERSION = 1


@dataclass
class EmbeddingTable:
    """The embedding of every item under one modality."""

    values: np.ndarray  # (N, d) float32
    present: np.ndarray | None = None  # (N,) bool; None means every item has an input
    attrs: dict[str, object] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])


@dataclass
class Embeddings:
    """Item ids in row order and the tables that share that order."""

    item_ids: list[str]
    tables: dict[str, EmbeddingTable] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(set(self.item_ids)) != len(self.item_ids):
            raise ValueError("item ids must be unique")

    def table(self, modality: str, path: str | os.PathLike[str] | None = None) -> EmbeddingTable:
        if modality not in self.tables:
            have = ", ".join(sorted(self.tables)) or "none"
            raise UserError(f"has no {modality!r} embeddings (it has: {have})", path=path)
        return self.tables[modality]


def validate_table(name: str, table: EmbeddingTable, n_items: int, path: object = None) -> None:
    values = table.values
    if values.ndim != 2 or values.shape[0] != n_items:
        raise UserError(
            f"embeddings {name!r} have shape {values.shape}, expected ({n_items}, d)", path=path
        )
    if values.shape[1] == 0:
        raise UserError(f"embeddings {name!r} have no columns", path=path)
    if not np.issubdtype(values.dtype, np.floating):
        raise UserError(f"embeddings {name!r} are {values.dtype}, expected float", path=path)
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise UserError(
            f"embeddings {name!r} hold NaN or infinity in {int(bad.sum())} rows (first: row {row})",
            path=path,
        )
    if table.present is not None and table.present.shape != (n_items,):
        raise UserError(f"present mask of {name!r} has shape {table.present.shape}", path=path)


def read_embeddings(
    path: str | os.PathLike[str], modalities: list[str] | None = None
) -> Embeddings:
    """Read and validate ``embeddings.h5`` (all modalities, or only those asked for)."""
    path = Path(path)
    with open_h5(path, "embeddings file", FORMAT, FORMAT_VERSION) as handle:
        item_ids = read_item_ids(handle, path)
        group = handle.get("embeddings")
        available = sorted(group.keys()) if group is not None else []
        wanted = available if modalities is None else list(modalities)
        tables: dict[str, EmbeddingTable] = {}
        for name in wanted:
            if name not in available:
                have = ", ".join(available) or "none"
                raise UserError(f"has no {name!r} embeddings (it has: {have})", path=path)
            dataset = group[name]
            present = None
            if "present" in handle and name in handle["present"]:
                present = np.asarray(handle["present"][name][()], dtype=bool)
            table = EmbeddingTable(
                values=np.asarray(dataset[()], dtype=np.float32),
                present=present,
                attrs=attrs_to_dict(dataset.attrs),
            )
            validate_table(name, table, len(item_ids), path)
            tables[name] = table
    return Embeddings(item_ids=item_ids, tables=tables)


def list_modalities(path: str | os.PathLike[str]) -> list[str]:
    with open_h5(path, "embeddings file", FORMAT, FORMAT_VERSION) as handle:
        group = handle.get("embeddings")
        return sorted(group.keys()) if group is not None else []


def write_embeddings(path: str | os.PathLike[str], embeddings: Embeddings) -> None:
    """Write the whole file atomically (validated first: nothing is written on bad input)."""
    for name, table in embeddings.tables.items():
        validate_table(name, table, len(embeddings.item_ids), path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        handle.attrs["format"] = FORMAT
        handle.attrs["format_version"] = FORMAT_VERSION
        handle.attrs["created_by"] = f"mmesid {__version__}"
        write_item_ids(handle, embeddings.item_ids)
        group = handle.create_group("embeddings")
        for name, table in embeddings.tables.items():
            dataset = group.create_dataset(name, data=np.asarray(table.values, dtype=np.float32))
            for key, value in table.attrs.items():
                dataset.attrs[key] = value
            dataset.attrs.setdefault("created_by", f"mmesid {__version__}")
            if table.present is not None:
                handle.require_group("present").create_dataset(
                    name, data=np.asarray(table.present, dtype=bool)
                )


def check_item_ids(path: str | os.PathLike[str], item_ids: list[str]) -> None:
    """Fail unless ``path`` is absent or holds exactly ``item_ids`` in that order.

    Cheap (reads only ``/item_ids``), so a command can check before long work.
    """
    path = Path(path)
    if not path.exists():
        return
    existing = read_embeddings(path, modalities=[]).item_ids
    if existing != item_ids:
        missing = len(set(item_ids) ^ set(existing))
        detail = f"{missing} item ids differ" if missing else "the same item ids in another order"
        raise UserError(
            f"holds {len(existing)} items that do not match the {len(item_ids)} "
            f"items being embedded ({detail}); write to a new file",
            path=path,
        )


def add_tables(
    path: str | os.PathLike[str], item_ids: list[str], tables: dict[str, EmbeddingTable]
) -> Embeddings:
    """Add or replace modalities in one write, keeping the others; ids and order must match."""
    path = Path(path)
    check_item_ids(path, item_ids)
    existing = read_embeddings(path) if path.exists() else Embeddings(item_ids=list(item_ids))
    existing.tables.update(tables)
    write_embeddings(path, existing)
    return existing


def add_table(
    path: str | os.PathLike[str], item_ids: list[str], modality: str, table: EmbeddingTable
) -> Embeddings:
    """Add or replace one modality, keeping the others; ids and their order must match."""
    return add_tables(path, item_ids, {modality: table})
