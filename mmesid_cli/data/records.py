"""``items.jsonl`` and ``sequences.jsonl``: the two input files of every pipeline.

``items.jsonl``: one object per line with a unique string ``item_id``; ``title``,
``description``, ``categories``, ``image`` (path relative to the items file) and
``image_url`` are optional; other keys are kept. ``sequences.jsonl``: one object per line,
``user_id`` and ``items`` (item ids, chronological), optional ``timestamps``.

Internally items are addressed by their row (0 … N−1 in file order) and sequences hold
those rows as int arrays, so every later stage works on integers.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmesid_cli.artifacts._common import existing_file
from mmesid_cli.artifacts.atomic import atomic_path
from mmesid_cli.errors import UserError


@dataclass
class ItemTable:
    """Items in file order; ``index[item_id]`` is the row of an item."""

    records: list[dict[str, object]]
    path: Path | None = None
    index: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.index = {str(r["item_id"]): row for row, r in enumerate(self.records)}

    @property
    def ids(self) -> list[str]:
        return [str(r["item_id"]) for r in self.records]

    def __len__(self) -> int:
        return len(self.records)


@dataclass
class SequenceTable:
    """Each user's chronological items as rows of an :class:`ItemTable`."""

    user_ids: list[str]
    items: list[np.ndarray]  # per user, int64 rows
    timestamps: list[list[float] | None]
    n_items: int
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.user_ids)

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.items))


def _json_lines(path: Path, what: str) -> Iterator[tuple[int, dict[str, object]]]:
    """Yield (line number, object) for each non-blank line, with errors naming the line."""
    any_line = False
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(
                    f"is not UTF-8 ({exc.reason} at byte {exc.start})", path=path, line=number
                ) from None
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UserError(
                    f"malformed JSON: {exc.msg} (column {exc.colno})", path=path, line=number
                ) from None
            if not isinstance(record, dict):
                raise UserError(
                    f"expected a JSON object per line, found {type(record).__name__}",
                    path=path,
                    line=number,
                )
            any_line = True
            yield number, record
    if not any_line:
        raise UserError(f"holds no {what}", path=path)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_items(path: str | os.PathLike[str]) -> ItemTable:
    path = existing_file(path, "items file")
    records: list[dict[str, object]] = []
    seen: dict[str, int] = {}
    for number, record in _json_lines(path, "items"):
        item_id = record.get("item_id")
        if item_id is None:
            raise UserError("record has no 'item_id'", path=path, line=number)
        if not isinstance(item_id, (str, int)) or isinstance(item_id, bool):
            raise UserError(
                f"'item_id' must be a string, found {item_id!r}", path=path, line=number
            )
        item_id = str(item_id)
        if item_id in seen:
            raise UserError(
                f"duplicate item_id {item_id!r} (first on line {seen[item_id]})",
                path=path,
                line=number,
            )
        seen[item_id] = number
        record["item_id"] = item_id
        records.append(record)
    return ItemTable(records=records, path=path)


def read_sequences(path: str | os.PathLike[str], items: ItemTable) -> SequenceTable:
    """Read sequences, mapping item ids to rows of ``items``; unknown ids are errors."""
    path = existing_file(path, "sequences file")
    user_ids: list[str] = []
    rows: list[np.ndarray] = []
    stamps: list[list[float] | None] = []
    seen: dict[str, int] = {}
    for number, record in _json_lines(path, "sequences"):
        user = record.get("user_id")
        seq = record.get("items")
        if user is None:
            raise UserError("record has no 'user_id'", path=path, line=number)
        user = str(user)
        if user in seen:
            raise UserError(
                f"duplicate user_id {user!r} (first on line {seen[user]})", path=path, line=number
            )
        seen[user] = number
        if not isinstance(seq, list) or not seq:
            raise UserError("'items' must be a non-empty list of item ids", path=path, line=number)
        try:
            row = np.fromiter((items.index[str(i)] for i in seq), dtype=np.int64, count=len(seq))
        except KeyError as exc:
            where = f" ({items.path})" if items.path else ""
            raise UserError(
                f"item {exc.args[0]!r} is not in the items file{where}", path=path, line=number
            ) from None
        ts = record.get("timestamps")
        if ts is not None and (not isinstance(ts, list) or len(ts) != len(seq)):
            raise UserError(
                "'timestamps' must be a list as long as 'items'", path=path, line=number
            )
        if ts is not None:
            bad = next((t for t in ts if not _is_number(t)), None)
            if bad is not None or any(not math.isfinite(t) for t in ts):
                shown = repr(bad) if bad is not None else "NaN or infinity"
                raise UserError(
                    f"'timestamps' must be finite numbers, found {shown}", path=path, line=number
                )
        user_ids.append(user)
        rows.append(row)
        stamps.append(ts)
    return SequenceTable(
        user_ids=user_ids, items=rows, timestamps=stamps, n_items=len(items), path=path
    )


def _dump_lines(path: str | os.PathLike[str], records: Iterable[dict[str, object]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False))
            handle.write("\n")


def write_items(path: str | os.PathLike[str], records: Iterable[dict[str, object]]) -> None:
    _dump_lines(path, records)


def write_sequences(
    path: str | os.PathLike[str], sequences: Iterable[tuple[str, list[str], list[float] | None]]
) -> None:
    """Write (user_id, item ids, timestamps or None) triples as ``sequences.jsonl``."""

    def records() -> Iterator[dict[str, object]]:
        for user, seq, ts in sequences:
            record: dict[str, object] = {"user_id": user, "items": seq}
            if ts is not None:
                record["timestamps"] = ts
            yield record

    _dump_lines(path, records())
