"""Describe any mmesid file for ``mmesid inspect`` (format detected from its content)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from mmesid_cli.artifacts._common import existing_file
from mmesid_cli.errors import UserError

Rows = list[tuple[str, str]]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def describe(path: str | os.PathLike[str]) -> tuple[str, Rows, dict | None]:
    """(title, rows of entry/value, optional JSON config) for the file at ``path``."""
    path = existing_file(path, "file")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head == _HDF5_MAGIC:
        return _describe_h5(path)
    if path.suffix == ".safetensors":
        return _describe_safetensors(path)
    if path.suffix == ".jsonl":
        return _describe_jsonl(path)
    if path.suffix == ".json":
        from mmesid_cli.artifacts.reports import read_report

        report = read_report(path)
        rows = [(k, _short(v)) for k, v in report.items()]
        return f"{path} (report: {report.get('kind')})", rows, None
    raise UserError("unknown file type (expected .h5, .safetensors, .json or .jsonl)", path=path)


def _short(value: object, limit: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe_h5(path: Path) -> tuple[str, Rows, None]:
    from mmesid_cli.artifacts import embeddings, sids
    from mmesid_cli.artifacts.h5 import peek_format

    fmt = peek_format(path)
    if fmt == embeddings.FORMAT:
        emb = embeddings.read_embeddings(path)
        rows: Rows = [
            ("format", f"{fmt} v{embeddings.FORMAT_VERSION}"),
            ("items", f"{len(emb.item_ids):,}"),
        ]
        for name, table in emb.tables.items():
            present = "" if table.present is None else f", {int(table.present.sum()):,} present"
            rows.append(
                (f"embeddings/{name}", f"{table.values.shape[0]:,} × {table.dim} float32{present}")
            )
            rows.extend((f"  {name}.{k}", _short(v)) for k, v in table.attrs.items())
        return f"{path}", rows, None
    if fmt == sids.FORMAT:
        s = sids.read_sids(path)
        rows = [("format", f"{fmt} v{sids.FORMAT_VERSION}"), ("items", f"{len(s.item_ids):,}")]
        for name, codes in s.codes.items():
            unique = len(np.unique(codes, axis=0))
            rows.append(
                (
                    f"codes/{name}",
                    f"{codes.shape[0]:,} × {codes.shape[1]} levels, {unique:,} distinct SIDs",
                )
            )
            rows.extend((f"  {name}.{k}", _short(v)) for k, v in s.attrs.get(name, {}).items())
        return f"{path}", rows, None
    raise UserError(f"HDF5 file of unknown format {fmt!r}", path=path)


def _describe_safetensors(path: Path) -> tuple[str, Rows, dict | None]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as handle:
            meta = handle.metadata() or {}
            shapes = {k: handle.get_slice(k).get_shape() for k in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise UserError(
            f"not a readable safetensors file (truncated or corrupt?): {exc}", path=path
        ) from None
    rows: Rows = [(k, v) for k, v in meta.items() if k != "config"]
    rows.append(
        ("tensors", f"{len(shapes)} ({sum(int(np.prod(s)) for s in shapes.values()):,} values)")
    )
    rows.extend((name, " × ".join(map(str, shape))) for name, shape in sorted(shapes.items()))
    config = json.loads(meta["config"]) if "config" in meta else None
    return f"{path}", rows, config


def _describe_jsonl(path: Path) -> tuple[str, Rows, None]:
    from mmesid_cli.data.records import _json_lines

    count, keys = 0, {}
    for _, record in _json_lines(path, "records"):
        count += 1
        for key in record:
            keys[key] = keys.get(key, 0) + 1
    rows: Rows = [("records", f"{count:,}")]
    rows.extend((f"key {k}", f"{n:,} records") for k, n in keys.items())
    return f"{path}", rows, None
