"""Importers from public data formats to ``items.jsonl`` + ``sequences.jsonl``.

- MME-SID / E4SRec: ``<user> <item> <item> …`` per line with 1-based item ids, and an
  optional CSV ``asin,title,imUrl,id`` giving each id its ASIN, title and image URL.
- P5 / S3-Rec: ``sequential_data.txt`` (same layout) plus ``datamaps.json``
  (``id2user``, ``id2item``).
- MovieLens: ml-100k (``u.data``, ``u.item``) and ml-1m (``ratings.dat``, ``movies.dat``).
- RecBole atomic files: ``<name>.inter`` and optional ``<name>.item``.

Every importer returns an :class:`Imported` in memory; nothing is written until the
whole input has been read and checked.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mmesid_cli.artifacts._common import existing_file
from mmesid_cli.data.records import write_items, write_sequences
from mmesid_cli.errors import UserError


@dataclass
class Imported:
    items: list[dict[str, object]]  # in id order
    sequences: list[tuple[str, list[str], list[float] | None]]  # (user, item ids, timestamps)
    source: str

    def write(self, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
        from mmesid_cli.artifacts.atomic import committed_together

        out = Path(out_dir)
        items_path, seq_path = out / "items.jsonl", out / "sequences.jsonl"
        with committed_together():  # a kill never leaves new items beside old sequences
            write_items(items_path, self.items)
            write_sequences(seq_path, self.sequences)
        return items_path, seq_path


def check_usable(imported: Imported, min_interactions: int = 0) -> None:
    """Refuse what the next command would refuse: no users or items, an item or user twice."""
    if not imported.sequences or not imported.items:
        why = f" after the {min_interactions}-core filter" if min_interactions > 1 else ""
        hint = "; lower --min-interactions" if min_interactions > 1 else ""
        raise UserError(
            f"no user and item is left{why} ({imported.source}){hint}", path=imported.source
        )
    items: set[str] = set()
    for record in imported.items:
        item = str(record["item_id"])
        if item in items:
            raise UserError(
                f"two item ids name one item {item!r}; items.jsonl needs unique item_id",
                path=imported.source,
            )
        items.add(item)
    seen: set[str] = set()
    for user, _, _ in imported.sequences:
        if user in seen:
            raise UserError(
                f"user {user!r} appears twice; sequences.jsonl holds one line per user",
                path=imported.source,
            )
        seen.add(user)


def _decode(path: Path, what: str, encoding: str = "utf-8") -> str:
    path = existing_file(path, what)
    data = path.read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(f"is not {encoding} text ({exc.reason})", path=path, line=line) from None
    return text


def _read_text(path: Path, what: str, encoding: str = "utf-8") -> list[str]:
    return _decode(path, what, encoding).splitlines()


def _int_sequences(path: Path) -> list[tuple[int, str, list[int]]]:
    """Parse ``<user> <item> …`` lines into (line number, user token, item ids)."""
    out = []
    first: dict[str, int] = {}
    for number, line in enumerate(_read_text(path, "sequence file"), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) < 2:
            raise UserError("a line needs a user and at least one item", path=path, line=number)
        if tokens[0] in first:
            raise UserError(
                f"user {tokens[0]} appears twice (first on line {first[tokens[0]]}); "
                "a line holds a user's whole sequence",
                path=path,
                line=number,
            )
        first[tokens[0]] = number
        try:
            ids = [int(t) for t in tokens[1:]]
        except ValueError as exc:
            raise UserError(f"item ids must be integers ({exc})", path=path, line=number) from None
        if min(ids) < 1:
            raise UserError("item ids are 1-based; found an id below 1", path=path, line=number)
        out.append((number, tokens[0], ids))
    if not out:
        raise UserError("holds no sequences", path=path)
    return out


def _csv_header(reader: csv.DictReader, path: Path) -> list[str] | None:
    try:
        return None if reader.fieldnames is None else list(reader.fieldnames)
    except csv.Error as exc:
        raise UserError(f"malformed CSV: {exc}", path=path, line=reader.line_num) from None


def _csv_rows(reader: csv.DictReader, path: Path) -> Iterator[dict[str, str]]:
    """The rows of ``reader``; a malformed row is a user error naming its line."""
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise UserError(f"malformed CSV: {exc}", path=path, line=reader.line_num) from None
        yield record


def import_amazon_txt(seq_path: Path, text_csv: Path | None = None) -> Imported:
    """MME-SID / E4SRec layout: items are ids 1…N, named by the CSV's ``asin`` when given."""
    rows = _int_sequences(seq_path)
    n_items = max(max(ids) for _, _, ids in rows)
    names = {i: str(i) for i in range(1, n_items + 1)}
    items: list[dict[str, object]] = [{"item_id": str(i)} for i in range(1, n_items + 1)]
    if text_csv is not None:
        # Titles may hold quoted newlines: parse the whole text, not split lines.
        reader = csv.DictReader(io.StringIO(_decode(text_csv, "item text CSV"), newline=""))
        need = {"asin", "title", "imUrl", "id"}
        fields = _csv_header(reader, text_csv)
        if fields is None or not need <= set(fields):
            raise UserError(f"expected CSV columns {sorted(need)}, found {fields}", path=text_csv)
        by_id: dict[int, dict[str, object]] = {}
        for record in _csv_rows(reader, text_csv):
            try:
                item = int(record["id"])
            except (TypeError, ValueError):
                raise UserError(
                    f"bad id {record['id']!r}", path=text_csv, line=reader.line_num
                ) from None
            if item in by_id:
                raise UserError(f"id {item} appears twice", path=text_csv, line=reader.line_num)
            by_id[item] = {
                "item_id": record["asin"],
                "title": record["title"],
                "image_url": record["imUrl"],
            }
        missing = [i for i in range(1, n_items + 1) if i not in by_id]
        if missing:
            raise UserError(
                f"has no row for {len(missing)} item ids used in {seq_path.name} (first: {missing[0]})",
                path=text_csv,
            )
        items = [by_id[i] for i in range(1, max(n_items, max(by_id)) + 1) if i in by_id]
        names = {i: str(by_id[i]["item_id"]) for i in by_id}
        if len(set(names.values())) != len(names):
            raise UserError("two ids share one asin", path=text_csv)
    sequences = [(user, [names[i] for i in ids], None) for _, user, ids in rows]
    return Imported(items=items, sequences=sequences, source=f"amazon-txt:{seq_path.name}")


def import_p5(seq_path: Path, datamaps_path: Path) -> Imported:
    """P5 / S3-Rec layout: ids mapped through ``datamaps.json`` (``id2user``, ``id2item``)."""
    rows = _int_sequences(seq_path)
    try:
        maps = json.loads(_decode(datamaps_path, "datamaps file"))
        id2user, id2item = maps["id2user"], maps["id2item"]
    except json.JSONDecodeError as exc:
        raise UserError(f"malformed JSON: {exc.msg}", path=datamaps_path, line=exc.lineno) from None
    except (KeyError, TypeError):
        raise UserError("expected keys 'id2user' and 'id2item'", path=datamaps_path) from None
    n_items = len(id2item)
    items = []
    for i in range(1, n_items + 1):
        if str(i) not in id2item:
            raise UserError(f"id2item has no id {i}", path=datamaps_path)
        items.append({"item_id": id2item[str(i)]})
    sequences = []
    for number, user, ids in rows:
        if user not in id2user:
            raise UserError(
                f"user {user} is not in id2user of {datamaps_path.name}", path=seq_path, line=number
            )
        try:
            sequences.append((id2user[user], [id2item[str(i)] for i in ids], None))
        except KeyError as exc:
            raise UserError(
                f"item {exc.args[0]} is not in id2item of {datamaps_path.name}",
                path=seq_path,
                line=number,
            ) from None
    return Imported(items=items, sequences=sequences, source=f"p5:{seq_path.name}")


def import_amazon(
    path: str | os.PathLike[str], text_csv: Path | None = None, datamaps: Path | None = None
) -> Imported:
    """Import a raw folder or sequence file, detecting MME-SID/E4SRec or P5/S3-Rec layout.

    A folder with ``sequential_data.txt`` and ``datamaps.json`` is P5; a folder with one
    ``*.txt`` (and optionally one CSV with ``asin,title,imUrl,id``) is MME-SID/E4SRec.
    """
    path = Path(path)
    if not path.exists():
        raise UserError("not found", path=path)
    if path.is_dir():
        if datamaps is None and (path / "datamaps.json").exists():
            datamaps = path / "datamaps.json"
        txts = sorted(path.glob("*.txt"))
        if datamaps is not None and (path / "sequential_data.txt").exists():
            seq = path / "sequential_data.txt"
        elif len(txts) == 1:
            seq = txts[0]
        else:
            raise UserError(
                f"expected one sequence .txt file in the folder, found {len(txts)}", path=path
            )
        if datamaps is None and text_csv is None:
            csvs = sorted(path.glob("*.csv"))
            if len(csvs) > 1:
                raise UserError(
                    f"several CSV files; name one with --text-csv ({[c.name for c in csvs]})",
                    path=path,
                )
            text_csv = csvs[0] if csvs else None
    else:
        seq = path
    if datamaps is not None:
        return import_p5(seq, datamaps)
    return import_amazon_txt(seq, text_csv)


def _chronological(
    events: dict[str, list[tuple[float, int, str]]],
) -> list[tuple[str, list[str], list[float]]]:
    """Order each user's (timestamp, file position, item) by time, ties by file order."""
    out = []
    for user, evs in events.items():
        evs.sort(key=lambda e: (e[0], e[1]))
        out.append((user, [e[2] for e in evs], [e[0] for e in evs]))
    return out


def _stamp(text: str, path: Path, line: int) -> float:
    """A timestamp field as a finite number, or a user error naming the file and line."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise UserError(f"timestamp {text.strip()!r} is not a number", path=path, line=line)
    return value


def _numeric_order(key: str) -> tuple[int, object]:
    return (0, int(key)) if key.isdigit() else (1, key)


def import_movielens(folder: str | os.PathLike[str]) -> Imported:
    """MovieLens ml-100k (``u.data``/``u.item``) or ml-1m (``ratings.dat``/``movies.dat``)."""
    folder = Path(folder)
    events: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    titles: dict[str, dict[str, object]] = {}
    if (folder / "u.data").exists():
        data_path = folder / "u.data"
        for number, line in enumerate(_read_text(data_path, "ratings file"), start=1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 4:
                raise UserError(
                    "expected user\\titem\\trating\\ttimestamp", path=data_path, line=number
                )
            events[parts[0]].append((_stamp(parts[3], data_path, number), number, parts[1]))
        if (folder / "u.item").exists():
            for line in _read_text(folder / "u.item", "movie file", encoding="latin-1"):
                parts = line.split("|")
                if len(parts) >= 5:
                    genres = [
                        "unknown",
                        "Action",
                        "Adventure",
                        "Animation",
                        "Children's",
                        "Comedy",
                        "Crime",
                        "Documentary",
                        "Drama",
                        "Fantasy",
                        "Film-Noir",
                        "Horror",
                        "Musical",
                        "Mystery",
                        "Romance",
                        "Sci-Fi",
                        "Thriller",
                        "War",
                        "Western",
                    ]
                    flags = parts[5:24]
                    titles[parts[0]] = {
                        "title": parts[1],
                        "categories": [g for g, f in zip(genres, flags, strict=False) if f == "1"],
                    }
    elif (folder / "ratings.dat").exists():
        data_path = folder / "ratings.dat"
        for number, line in enumerate(
            _read_text(data_path, "ratings file", encoding="latin-1"), start=1
        ):
            if not line.strip():
                continue
            parts = line.split("::")
            if len(parts) != 4:
                raise UserError(
                    "expected user::item::rating::timestamp", path=data_path, line=number
                )
            events[parts[0]].append((_stamp(parts[3], data_path, number), number, parts[1]))
        if (folder / "movies.dat").exists():
            for line in _read_text(folder / "movies.dat", "movie file", encoding="latin-1"):
                parts = line.split("::")
                if len(parts) == 3:
                    titles[parts[0]] = {"title": parts[1], "categories": parts[2].split("|")}
    else:
        raise UserError("expected ml-100k (u.data) or ml-1m (ratings.dat) files", path=folder)
    return _finish(events, titles, f"movielens:{folder.name}")


def _finish(events, titles, source: str) -> Imported:
    used = {e[2] for evs in events.values() for e in evs}
    item_ids = sorted(used, key=_numeric_order)
    items = [{"item_id": i, **titles.get(i, {})} for i in item_ids]
    users = sorted(events, key=_numeric_order)
    ordered = dict(zip(users, [events[u] for u in users], strict=True))
    sequences = [(u, seq, [float(t) for t in ts]) for u, seq, ts in _chronological(ordered)]
    return Imported(items=items, sequences=[(u, s, ts) for u, s, ts in sequences], source=source)


def import_recbole(path: str | os.PathLike[str]) -> Imported:
    """RecBole atomic files: ``<name>.inter`` (user_id, item_id, timestamp) and ``<name>.item``."""
    path = Path(path)
    if path.is_dir():
        inters = sorted(path.glob("*.inter"))
        if len(inters) != 1:
            raise UserError(
                f"expected one .inter file in the folder, found {len(inters)}", path=path
            )
        inter = inters[0]
    else:
        inter = path
    lines = _read_text(inter, "interaction file")
    header = [h.split(":")[0] for h in lines[0].split("\t")] if lines else []
    if not {"user_id", "item_id"} <= set(header):
        raise UserError(f"header must name user_id and item_id, found {header}", path=inter)
    u, i = header.index("user_id"), header.index("item_id")
    t = header.index("timestamp") if "timestamp" in header else None
    events: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != len(header):
            raise UserError(
                f"expected {len(header)} tab-separated fields, found {len(parts)}",
                path=inter,
                line=number,
            )
        stamp = _stamp(parts[t], inter, number) if t is not None else float(number)
        events[parts[u]].append((stamp, number, parts[i]))
    titles: dict[str, dict[str, object]] = {}
    item_file = inter.with_suffix(".item")
    if item_file.exists():
        rows = _read_text(item_file, "item file")
        cols = [h.split(":")[0] for h in rows[0].split("\t")] if rows else []
        if "item_id" not in cols:
            raise UserError(f"the header must name item_id, found {cols}", path=item_file, line=1)
        for number, line in enumerate(rows[1:], start=2):
            parts = line.split("\t")
            if len(parts) != len(cols):
                raise UserError(
                    f"expected {len(cols)} tab-separated fields", path=item_file, line=number
                )
            record = dict(zip(cols, parts, strict=True))
            item_id = record.pop("item_id")
            fields: dict[str, object] = {}
            for key, value in record.items():
                if key in ("movie_title", "title", "name"):
                    fields["title"] = value
                elif key in ("class", "genre", "categories"):
                    fields["categories"] = value.split()
                else:
                    fields[key] = value
            titles[item_id] = fields
    return _finish(events, titles, f"recbole:{inter.name}")


def k_core(imported: Imported, min_interactions: int) -> Imported:
    """Repeatedly drop users and items with fewer than ``min_interactions`` interactions."""
    if min_interactions <= 1:
        return imported
    seqs = [(u, list(s), None if ts is None else list(ts)) for u, s, ts in imported.sequences]
    while True:
        counts = Counter(i for _, s, _ in seqs for i in s)
        keep_items = {i for i, c in counts.items() if c >= min_interactions}
        new = []
        for u, s, ts in seqs:
            mask = [i in keep_items for i in s]
            s2 = [i for i, m in zip(s, mask, strict=True) if m]
            ts2 = None if ts is None else [t for t, m in zip(ts, mask, strict=True) if m]
            if len(s2) >= min_interactions:
                new.append((u, s2, ts2))
        if len(new) == len(seqs) and all(
            len(a[1]) == len(b[1]) for a, b in zip(new, seqs, strict=True)
        ):
            break
        seqs = new
    used = {i for _, s, _ in seqs for i in s}
    items = [r for r in imported.items if r["item_id"] in used]
    return Imported(
        items=items, sequences=seqs, source=f"{imported.source}|{min_interactions}-core"
    )
