"""Embeddings computed elsewhere, imported as a modality (``.npy``, ``.pt``, ``.pkl``).

A user with their own encoder (or the reference code's own SASRec table) brings a matrix
with one row per item, in an order given by a file of item ids (one per line) or by the
items file itself, optionally with a leading padding row to drop (the reference tables keep
row 0 for padding, row i for item id i).

Loading is as safe as each format allows: ``.npy`` without pickles, ``.pt`` with
``torch.load(weights_only=True)``. A ``.pkl`` is a plain pickle, which can run any code,
so it is read with an unpickler that accepts only the few torch / numpy names a pickled
tensor or array needs; the inner storages of a pickled torch tensor go through
``torch.load(weights_only=True, map_location="cpu")``, which is also what makes a tensor
pickled on a CUDA device readable on a CPU-only machine (a plain ``torch.load`` of such a
file fails on the inner storage).
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmesid_cli.artifacts._common import existing_file
from mmesid_cli.data.records import ItemTable
from mmesid_cli.errors import UserError

SUFFIXES = (".npy", ".pt", ".pth", ".pkl", ".pickle")

# Everything a pickled torch tensor or numpy array refers to; nothing that runs code.
_ALLOWED_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch", "FloatStorage"),
    ("torch", "DoubleStorage"),
    ("torch", "HalfStorage"),
    ("torch", "BFloat16Storage"),
    ("collections", "OrderedDict"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class _TensorUnpickler(pickle.Unpickler):
    """Unpickles tensors and arrays only; storages are mapped to the CPU."""

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's own signature
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            import torch

            def load_storage(data: bytes):
                return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)

            return load_storage
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (not a tensor or array)")


def _to_matrix(obj: object, path: Path) -> np.ndarray:
    """A 2-D float32 array from a tensor, an array, or a dict holding exactly one of them."""
    import torch

    if isinstance(obj, dict):
        tensors = [v for v in obj.values() if isinstance(v, (torch.Tensor, np.ndarray))]
        if len(tensors) != 1:
            raise UserError(
                f"holds a dict with {len(tensors)} tensors; expected one tensor or array",
                path=path,
            )
        obj = tensors[0]
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().to("cpu", torch.float32).numpy()
    if not isinstance(obj, np.ndarray):
        raise UserError(f"holds a {type(obj).__name__}; expected a tensor or array", path=path)
    if obj.ndim != 2:
        raise UserError(f"holds an array of shape {obj.shape}; expected (items, dim)", path=path)
    if not (np.issubdtype(obj.dtype, np.floating) or np.issubdtype(obj.dtype, np.integer)):
        raise UserError(f"holds {obj.dtype} values; expected numbers", path=path)
    return np.ascontiguousarray(obj, dtype=np.float32)


def load_matrix(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a (rows, dim) matrix from ``.npy``, ``.pt``/``.pth`` or ``.pkl``/``.pickle``."""
    import torch

    path = existing_file(path, "embeddings to import")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UserError(f"unknown file type {suffix!r} (expected {', '.join(SUFFIXES)})", path=path)
    try:
        if suffix == ".npy":
            obj: object = np.load(path, allow_pickle=False)
        elif suffix in (".pt", ".pth"):
            obj = torch.load(path, map_location="cpu", weights_only=True)
        else:
            with open(path, "rb") as handle:
                obj = _TensorUnpickler(handle).load()
    except (pickle.UnpicklingError, ValueError, RuntimeError, EOFError, OSError) as exc:
        first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise UserError(f"cannot read the embeddings: {first}", path=path) from None
    return _to_matrix(obj, path)


def read_id_order(spec: str | os.PathLike[str], items: ItemTable) -> list[str]:
    """Item ids in row order: ``"items"`` (the items file's order) or a file of ids, one a line."""
    if str(spec) == "items":
        return items.ids
    path = existing_file(spec, "id order file")
    ids = []
    seen: dict[str, int] = {}
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                item_id = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
            except UnicodeDecodeError as exc:
                raise UserError(f"is not UTF-8 ({exc.reason})", path=path, line=number) from None
            if not item_id:
                continue
            if item_id not in items.index:
                where = f" {items.path}" if items.path else ""
                raise UserError(
                    f"item {item_id!r} is not in the items file{where}", path=path, line=number
                )
            if item_id in seen:
                raise UserError(
                    f"item {item_id!r} is listed twice (first on line {seen[item_id]})",
                    path=path,
                    line=number,
                )
            seen[item_id] = number
            ids.append(item_id)
    return ids


def align_rows(
    matrix: np.ndarray,
    row_ids: Sequence[str],
    items: ItemTable,
    *,
    drop_first_row: bool = False,
    source: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """Reorder ``matrix`` (one row per id of ``row_ids``) into the items file's order.

    Every item of the items file must have a row and every value must be finite; rows of
    ids that are not in the items file are an error too (a sign of the wrong order file).
    """
    if drop_first_row:
        matrix = matrix[1:]
    if matrix.shape[0] != len(row_ids):
        hint = "" if drop_first_row else " (a padding row 0? use --drop-first-row)"
        raise UserError(
            f"has {matrix.shape[0]} rows{' after dropping row 0' if drop_first_row else ''}, "
            f"but the id order lists {len(row_ids)} items{hint}",
            path=source,
        )
    position = {item_id: row for row, item_id in enumerate(row_ids)}
    unknown = [i for i in row_ids if i not in items.index]
    if unknown:
        raise UserError(
            f"{len(unknown)} ids of the id order are not in the items file (first: {unknown[0]!r})",
            path=source,
        )
    missing = [i for i in items.ids if i not in position]
    if missing:
        raise UserError(f"{len(missing)} items have no row (first: {missing[0]!r})", path=source)
    aligned = matrix[[position[i] for i in items.ids]]
    bad = ~np.isfinite(aligned).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise UserError(
            f"NaN or infinity in {int(bad.sum())} item rows (first: item {items.ids[row]!r})",
            path=source,
        )
    return aligned


def import_embeddings(
    path: str | os.PathLike[str],
    items: ItemTable,
    id_order: str | os.PathLike[str] = "items",
    drop_first_row: bool = False,
) -> tuple[np.ndarray, dict[str, object]]:
    """Read, align and check an external matrix: ((N, d) float32 in items order, attrs)."""
    from mmesid_cli.encoders import file_sha256

    matrix = load_matrix(path)
    aligned = align_rows(
        matrix, read_id_order(id_order, items), items, drop_first_row=drop_first_row, source=path
    )
    attrs: dict[str, object] = {
        "encoder": "imported",
        "imported_from": str(path),
        "imported_sha256": file_sha256(path),
        "id_order": str(id_order),
        "dropped_first_row": bool(drop_first_row),
        "normalised": False,
    }
    return aligned, attrs
