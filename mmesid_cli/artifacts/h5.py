"""Opening HDF5 artifacts with errors a user can act on (truncated, not HDF5, missing)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from mmesid_cli.artifacts._common import check_format, existing_file
from mmesid_cli.errors import UserError


@contextlib.contextmanager
def open_h5(
    path: str | os.PathLike[str], what: str, fmt: str, supported: int
) -> Iterator[h5py.File]:
    path = existing_file(path, what)
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise UserError(
            f"not a readable HDF5 file (truncated or corrupt?): {exc}", path=path
        ) from None
    with handle:
        check_format(
            path,
            _attr_str(handle.attrs.get("format")),
            fmt,
            handle.attrs.get("format_version"),
            supported,
        )
        try:
            yield handle
        except (OSError, KeyError) as exc:  # a dataset whose bytes are cut off
            raise UserError(
                f"cannot read {what} (truncated or corrupt?): {exc}", path=path
            ) from None


def peek_format(path: Path) -> object:
    """The format tag of an HDF5 file, with a user error when it cannot be opened."""
    try:
        with h5py.File(path, "r") as handle:
            return _attr_str(handle.attrs.get("format"))
    except OSError as exc:
        raise UserError(
            f"not a readable HDF5 file (truncated or corrupt?): {exc}", path=path
        ) from None


def _attr_str(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def read_item_ids(handle: h5py.File, path: Path) -> list[str]:
    if "item_ids" not in handle:
        raise UserError("has no /item_ids dataset", path=path)
    raw = handle["item_ids"][()]
    ids = [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in raw]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(x for x in ids if x in seen or seen.add(x))  # type: ignore[func-returns-value]
        raise UserError(f"/item_ids lists item {dup!r} twice", path=path)
    return ids


def write_item_ids(handle: h5py.File, item_ids: list[str]) -> None:
    handle.create_dataset(
        "item_ids", data=np.array(item_ids, dtype=object), dtype=h5py.string_dtype("utf-8")
    )


def attrs_to_dict(attrs: h5py.AttributeManager) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in attrs.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        out[key] = value
    return out
