"""Bad input to every subcommand: exit 2, one line naming the file, nothing written.

One case per (command, class of bad input): malformed and non-UTF-8 lines, a BOM,
duplicates, unknown ids, NaN/Inf, wrong dimensions, truncated and wrong-kind HDF5 and
safetensors files, a folder given for a file, unwritable outputs, out-of-range options and
mismatched artifact pairs. Each case asserts exit code 2, exactly one line on stderr that
names the culprit (a file, with its line where there is one, or an option), no traceback,
no output and no temporary file afterwards, and the shared inputs unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from mmesid_cli.artifacts.embeddings import Embeddings, EmbeddingTable, write_embeddings
from tests.cli.test_tokenize import TINY
from tests.conftest import run_cli
from tests.llm4sr.tiny import TinyFiles, tiny_backbone, tiny_files


@dataclass
class World:
    """Valid inputs every case starts from (module scope; no case may change them)."""

    root: Path
    files: TinyFiles
    tok: Path  # tokenize -o: tokenizer.safetensors, sids.h5, report.json
    tok2: Path  # the same, another seed: its SIDs belong to another tokeniser
    collab: Path  # embed -m collab -o collab/emb.h5: sasrec.safetensors, sasrec_report.json
    run: Path  # a finetune run
    run_tok: Path  # a finetune run on tok's tokeniser and SIDs
    llama: Path
    small_items: Path  # a catalogue of 20 of the 30 items
    small_sequences: Path

    @property
    def items(self) -> Path:
        return self.files.items

    @property
    def sequences(self) -> Path:
        return self.files.sequences

    @property
    def emb(self) -> Path:
        return self.files.embeddings


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("world")
    files = tiny_files(root / "in")
    assert run_cli("tokenize", files.embeddings, *TINY, "-o", root / "tok") == 0
    assert run_cli("tokenize", files.embeddings, *TINY, "--seed", "7", "-o", root / "tok2") == 0
    collab = root / "collab"
    assert (
        run_cli(
            "embed",
            files.items,
            "-m",
            "collab",
            "--sequences",
            files.sequences,
            "-o",
            collab / "emb.h5",
            "--max-epochs",
            "1",
            "--dim",
            "8",
            "--eval-every",
            "1",
        )  # fmt: skip
        == 0
    )
    llama = tiny_backbone(root / "llama")
    run = root / "run"
    assert (
        run_cli(
            "finetune",
            "--sequences",
            files.sequences,
            "--embeddings",
            files.embeddings,
            "--tokenizer",
            files.tokenizer,
            "--sids",
            files.sids,
            "--model",
            llama,
            "-o",
            run,
            "--max-steps",
            "1",
            "--warmup-steps",
            "0",
            "--eval-users",
            "0",
            "--batch-size",
            "8",
        )  # fmt: skip
        == 0
    )
    run_tok = root / "run_tok"
    assert (
        run_cli(
            "finetune",
            "--sequences",
            files.sequences,
            "--embeddings",
            files.embeddings,
            "--tokenizer",
            root / "tok" / "tokenizer.safetensors",
            "--sids",
            root / "tok" / "sids.h5",
            "--model",
            llama,
            "-o",
            run_tok,
            "--max-steps",
            "1",
            "--warmup-steps",
            "0",
            "--eval-users",
            "0",
            "--batch-size",
            "8",
        )  # fmt: skip
        == 0
    )
    # the pairs the mismatch cases spoil are accepted as they were written
    for codebook, sids in ((root / "tok" / "tokenizer.safetensors", root / "tok" / "sids.h5"),
                           (run_tok / "sid_tables.safetensors", root / "tok" / "sids.h5")):  # fmt: skip
        args = ["--embeddings", files.embeddings, "-s", files.sequences, "--bootstrap", "0"]
        assert run_cli("concordance", *args, "--codebook", codebook, "--sids", sids) == 0
    small = root / "small"
    small.mkdir()
    lines = files.items.read_text().splitlines()[:20]
    (small / "items.jsonl").write_text("\n".join(lines) + "\n")
    kept = {json.loads(line)["item_id"] for line in lines}
    users = []
    for line in files.sequences.read_text().splitlines():
        record = json.loads(line)
        record["items"] = [i for i in record["items"] if i in kept]
        if len(record["items"]) >= 3:
            users.append(json.dumps(record))
    (small / "sequences.jsonl").write_text("\n".join(users) + "\n")
    return World(
        root=root,
        files=files,
        tok=root / "tok",
        tok2=root / "tok2",
        collab=collab,
        run=run,
        run_tok=run_tok,
        llama=llama,
        small_items=small / "items.jsonl",
        small_sequences=small / "sequences.jsonl",
    )


# --- bad files, written into the case's own folder ---------------------------------------


def _text(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _bytes(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _truncated(folder: Path, source: Path) -> Path:
    data = source.read_bytes()
    return _bytes(folder, source.name, data[: len(data) // 2])


def _nan_embeddings(folder: Path, w: World) -> Path:
    """A valid file whose table then gets a NaN (the writer itself refuses one)."""
    path = folder / "nan.h5"
    values = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    tables = {"collab": EmbeddingTable(values)}
    write_embeddings(path, Embeddings(item_ids=w.files.item_ids, tables=tables))
    with h5py.File(path, "r+") as handle:
        handle["embeddings/collab"][3, 2] = np.nan
    return path


def _file_in_the_way(folder: Path) -> Path:
    """A plain file: an output "under" it cannot be written."""
    return _text(folder, "a-file", "not a folder\n")


def _items_sequences(folder: Path, w: World) -> tuple[Path, Path]:
    """Copies of the world's inputs, so a case may spoil one of them."""
    items = _text(folder, "items.jsonl", w.items.read_text())
    sequences = _text(folder, "sequences.jsonl", w.sequences.read_text())
    return items, sequences


# --- the cases ---------------------------------------------------------------------------

# (args, needles, outputs): the command line, what its one stderr line must hold, and the
# outputs it asked for, none of which may exist afterwards.
Built = tuple[list[object], list[str], list[Path]]


@dataclass
class Case:
    command: str  # the subcommand, as `mmesid --help` lists it
    kind: str  # the class of bad input
    build: Callable[[World, Path], Built]


CASES: list[Case] = []


def case(command: str, kind: str):
    def register(build: Callable[[World, Path], Built]) -> Callable[[World, Path], Built]:
        CASES.append(Case(command, kind, build))
        return build

    return register


# data stats ----------------------------------------------------------------------------


@case("data stats", "malformed-json")
def _(w: World, o: Path) -> Built:
    items, _ = _items_sequences(o, w)
    seq = _text(o, "sequences.jsonl", '{"user_id": "u", "items": ["I000"]}\n{"user_id": "v"\n')
    out = o / "stats.json"
    return (
        ["data", "stats", items, seq, "--json", out],
        ["sequences.jsonl:2", "malformed JSON"],
        [out],
    )


@case("data stats", "non-utf8")
def _(w: World, o: Path) -> Built:
    items = _bytes(o, "items.jsonl", b'{"item_id": "I000"}\n{"item_id": "caf\xe9"}\n')
    out = o / "stats.json"
    return (
        ["data", "stats", items, w.sequences, "--json", out],
        ["items.jsonl:2", "not UTF-8"],
        [out],
    )


@case("data stats", "bom")
def _(w: World, o: Path) -> Built:
    items = _bytes(o, "items.jsonl", b"\xef\xbb\xbf" + w.items.read_bytes())
    out = o / "stats.json"
    return ["data", "stats", items, w.sequences, "--json", out], ["items.jsonl:1", "BOM"], [out]


@case("data stats", "duplicate-item")
def _(w: World, o: Path) -> Built:
    items = _text(o, "items.jsonl", w.items.read_text() + '{"item_id": "I003"}\n')
    out = o / "stats.json"
    return (
        ["data", "stats", items, w.sequences, "--json", out],
        ["items.jsonl:31", "duplicate item_id 'I003'"],
        [out],
    )


@case("data stats", "duplicate-user")
def _(w: World, o: Path) -> Built:
    seq = _text(
        o,
        "sequences.jsonl",
        w.sequences.read_text() + w.sequences.read_text().splitlines()[0] + "\n",
    )
    out = o / "stats.json"
    return (
        ["data", "stats", w.items, seq, "--json", out],
        ["sequences.jsonl:41", "duplicate user_id"],
        [out],
    )


@case("data stats", "unknown-id")
def _(w: World, o: Path) -> Built:
    seq = _text(o, "sequences.jsonl", '{"user_id": "u", "items": ["I000", "NOPE"]}\n')
    out = o / "stats.json"
    return ["data", "stats", w.items, seq, "--json", out], ["sequences.jsonl:1", "'NOPE'"], [out]


@case("data stats", "nan-timestamp")
def _(w: World, o: Path) -> Built:
    seq = _text(
        o,
        "sequences.jsonl",
        '{"user_id": "u", "items": ["I000", "I001"], "timestamps": [1, NaN]}\n',
    )
    out = o / "stats.json"
    return (
        ["data", "stats", w.items, seq, "--json", out],
        ["sequences.jsonl:1", "timestamps"],
        [out],
    )


@case("data stats", "text-timestamp")
def _(w: World, o: Path) -> Built:
    seq = _text(
        o,
        "sequences.jsonl",
        '{"user_id": "u", "items": ["I000", "I001"], "timestamps": [1, "noon"]}\n',
    )
    out = o / "stats.json"
    return ["data", "stats", w.items, seq, "--json", out], ["sequences.jsonl:1", "'noon'"], [out]


@case("data stats", "folder-for-input")
def _(w: World, o: Path) -> Built:
    out = o / "stats.json"
    return ["data", "stats", o, w.sequences, "--json", out], [str(o), "not a regular file"], [out]


@case("data stats", "folder-for-output")
def _(w: World, o: Path) -> Built:
    (o / "stats.json").mkdir()
    return (
        ["data", "stats", w.items, w.sequences, "--json", o / "stats.json"],
        ["stats.json", "is a folder"],
        [],
    )


@case("data stats", "output-under-a-file")
def _(w: World, o: Path) -> Built:
    out = _file_in_the_way(o) / "stats.json"
    return (
        ["data", "stats", w.items, w.sequences, "--json", out],
        ["a-file/stats.json", "not a folder"],
        [out],
    )


@case("data stats", "output-is-an-input")
def _(w: World, o: Path) -> Built:
    items, sequences = _items_sequences(o, w)
    kept = _Unchanged(items, items.read_bytes())
    return (
        ["data", "stats", items, sequences, "--json", items],
        ["items.jsonl", "is an input"],
        [kept],
    )


# data import-* --------------------------------------------------------------------------


@case("data import-amazon", "malformed-line")
def _(w: World, o: Path) -> Built:
    raw = _text(o, "Beauty.txt", "1 1 2 3\n2 3 x\n")
    return (
        ["data", "import-amazon", raw, "-o", o / "out"],
        ["Beauty.txt:2", "integers"],
        [o / "out"],
    )


@case("data import-amazon", "non-utf8")
def _(w: World, o: Path) -> Built:
    raw = _bytes(o, "Beauty.txt", b"1 1 2 3\n2 \xff 3\n")
    return ["data", "import-amazon", raw, "-o", o / "out"], ["Beauty.txt:2", "utf-8"], [o / "out"]


@case("data import-amazon", "duplicate-user")
def _(w: World, o: Path) -> Built:
    raw = _text(o, "Beauty.txt", "1 1 2 3\n2 2 3 4\n1 4 5 6\n")
    return (
        ["data", "import-amazon", raw, "-o", o / "out"],
        ["Beauty.txt:3", "user 1 appears twice"],
        [o / "out"],
    )


@case("data import-amazon", "empty-result")
def _(w: World, o: Path) -> Built:
    raw = _text(o, "Beauty.txt", "1 1 2 3\n2 2 3 4\n")
    args = ["data", "import-amazon", raw, "-o", o / "out", "--min-interactions", "1000000"]
    return args, ["Beauty.txt", "no user and item is left", "--min-interactions"], [o / "out"]


@case("data import-amazon", "option-range")
def _(w: World, o: Path) -> Built:
    raw = _text(o, "Beauty.txt", "1 1 2 3\n")
    args = ["data", "import-amazon", raw, "-o", o / "out", "--min-interactions", "-5"]
    return args, ["--min-interactions"], [o / "out"]


@case("data import-amazon", "file-for-output-folder")
def _(w: World, o: Path) -> Built:
    raw = _text(o, "Beauty.txt", "1 1 2 3\n")
    target = _file_in_the_way(o)
    return ["data", "import-amazon", raw, "-o", target], ["a-file", "not a folder"], []


@case("data import-amazon", "folder-for-output-file")
def _(w: World, o: Path) -> Built:
    raw = _text(o, "Beauty.txt", "1 1 2 3\n")
    (o / "out" / "items.jsonl").mkdir(parents=True)
    return (
        ["data", "import-amazon", raw, "-o", o / "out"],
        ["items.jsonl", "is a folder"],
        [o / "out" / "sequences.jsonl"],
    )


@case("data import-amazon", "duplicate-item")
def _(w: World, o: Path) -> Built:
    raw = o / "p5"
    raw.mkdir()
    _text(raw, "sequential_data.txt", "1 1 2 3\n2 2 3 1\n")
    maps = {"id2user": {"1": "ua", "2": "ub"}, "id2item": {"1": "A", "2": "B", "3": "A"}}
    _text(raw, "datamaps.json", json.dumps(maps))
    return (
        ["data", "import-amazon", raw, "-o", o / "out"],
        ["sequential_data.txt", "'A'"],
        [o / "out"],
    )


@case("data import-movielens", "text-timestamp")
def _(w: World, o: Path) -> Built:
    folder = o / "ml-100k"
    folder.mkdir()
    _text(folder, "u.data", "1\t10\t5\t881250949\n1\t11\t4\tyesterday\n")
    return (
        ["data", "import-movielens", folder, "-o", o / "out"],
        ["u.data:2", "'yesterday'"],
        [o / "out"],
    )


@case("data import-movielens", "malformed-line")
def _(w: World, o: Path) -> Built:
    folder = o / "ml-1m"
    folder.mkdir()
    _text(folder, "ratings.dat", "1::10::5::978300760\n1::11\n")
    return (
        ["data", "import-movielens", folder, "-o", o / "out"],
        ["ratings.dat:2", "user::item"],
        [o / "out"],
    )


@case("data import-recbole", "item-file-without-item-id")
def _(w: World, o: Path) -> Built:
    _text(o, "toy.inter", "user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t1\nu1\ti2\t2\n")
    _text(o, "toy.item", "movie:token\ttitle:token_seq\ni1\tA\n")
    return (
        ["data", "import-recbole", o / "toy.inter", "-o", o / "out"],
        ["toy.item:1", "item_id"],
        [o / "out"],
    )


@case("data import-recbole", "text-timestamp")
def _(w: World, o: Path) -> Built:
    _text(
        o, "toy.inter", "user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t1\nu1\ti2\tlate\n"
    )
    return (
        ["data", "import-recbole", o / "toy.inter", "-o", o / "out"],
        ["toy.inter:3", "'late'"],
        [o / "out"],
    )


@case("data import-recbole", "non-utf8")
def _(w: World, o: Path) -> Built:
    _bytes(o, "toy.inter", b"user_id:token\titem_id:token\nu1\ti\xe91\n")
    return (
        ["data", "import-recbole", o / "toy.inter", "-o", o / "out"],
        ["toy.inter:2", "utf-8"],
        [o / "out"],
    )


# embed ------------------------------------------------------------------------------------


@case("embed", "malformed-json")
def _(w: World, o: Path) -> Built:
    items = _text(o, "items.jsonl", '{"item_id": "a"}\n{"item_id": }\n')
    return (
        ["embed", items, "-m", "text", "-o", o / "e.h5"],
        ["items.jsonl:2", "malformed JSON"],
        [o / "e.h5"],
    )


@case("embed", "unknown-id-in-id-order")
def _(w: World, o: Path) -> Built:
    np.save(o / "t.npy", np.ones((30, 4), np.float32))
    ids = _text(
        o, "ids.txt", "\n".join(w.files.item_ids[:5] + ["ZZZ"] + w.files.item_ids[5:]) + "\n"
    )
    args = [
        "embed",
        w.items,
        "-m",
        "mine",
        "--import",
        o / "t.npy",
        "--id-order",
        ids,
        "-o",
        o / "e.h5",
    ]
    return args, ["ids.txt:6", "'ZZZ'"], [o / "e.h5"]


@case("embed", "duplicate-id-in-id-order")
def _(w: World, o: Path) -> Built:
    np.save(o / "t.npy", np.ones((30, 4), np.float32))
    ids = _text(o, "ids.txt", "\n".join(w.files.item_ids + ["I001"]) + "\n")
    args = [
        "embed",
        w.items,
        "-m",
        "mine",
        "--import",
        o / "t.npy",
        "--id-order",
        ids,
        "-o",
        o / "e.h5",
    ]
    return args, ["ids.txt:31", "twice"], [o / "e.h5"]


@case("embed", "inf-in-import")
def _(w: World, o: Path) -> Built:
    table = np.ones((30, 4), np.float32)
    table[7, 1] = np.inf
    np.save(o / "t.npy", table)
    args = ["embed", w.items, "-m", "mine", "--import", o / "t.npy", "-o", o / "e.h5"]
    return args, ["t.npy", "NaN or infinity", "'I007'"], [o / "e.h5"]


@case("embed", "wrong-dimensions")
def _(w: World, o: Path) -> Built:
    np.save(o / "t.npy", np.ones(30, np.float32))
    args = ["embed", w.items, "-m", "mine", "--import", o / "t.npy", "-o", o / "e.h5"]
    return args, ["t.npy", "shape"], [o / "e.h5"]


@case("embed", "truncated-hdf5-output")
def _(w: World, o: Path) -> Built:
    existing = _truncated(o, w.emb)
    before = existing.read_bytes()
    np.save(o / "t.npy", np.ones((30, 4), np.float32))
    args = ["embed", w.items, "-m", "mine", "--import", o / "t.npy", "-o", existing]
    # the spoiled file is an input here (tables are added to it): it must stay as it was
    return args, ["embeddings.h5", "truncated or corrupt"], [_Unchanged(existing, before)]


@case("embed", "folder-for-output")
def _(w: World, o: Path) -> Built:
    (o / "e.h5").mkdir()
    return ["embed", w.items, "-m", "text", "-o", o / "e.h5"], ["e.h5", "is a folder"], []


@case("embed", "output-under-a-file")
def _(w: World, o: Path) -> Built:
    out = _file_in_the_way(o) / "e.h5"
    return ["embed", w.items, "-m", "text", "-o", out], ["a-file", "not a folder"], [out]


@case("embed", "collab-report-is-a-folder")
def _(w: World, o: Path) -> Built:
    (o / "rep").mkdir()
    args = [
        "embed",
        w.items,
        "-m",
        "collab",
        "--sequences",
        w.sequences,
        "-o",
        o / "e.h5",
        "--report",
        o / "rep",
    ]
    return args, ["rep", "is a folder"], [o / "e.h5", o / "sasrec.safetensors"]


for _flag, _value in (
    ("--max-minutes", "-1"),
    ("--lr", "-1"),
    ("--seed", str(10**30)),
    ("--dropout", "1.5"),
):

    @case("embed", f"option-range{_flag}")
    def _(w: World, o: Path, flag: str = _flag, value: str = _value) -> Built:
        args = [
            "embed",
            w.items,
            "-m",
            "collab",
            "--sequences",
            w.sequences,
            "-o",
            o / "e.h5",
            flag,
            value,
        ]
        return args, [flag], [o / "e.h5", o / "sasrec.safetensors", o / "sasrec_report.json"]


# tokenize ---------------------------------------------------------------------------------


@case("tokenize", "nan")
def _(w: World, o: Path) -> Built:
    emb = _nan_embeddings(o, w)
    return (
        ["tokenize", emb, *TINY, "-o", o / "tok"],
        ["nan.h5", "NaN or infinity", "row 3"],
        [o / "tok"],
    )


@case("tokenize", "truncated-hdf5")
def _(w: World, o: Path) -> Built:
    emb = _truncated(o, w.emb)
    return (
        ["tokenize", emb, *TINY, "-o", o / "tok"],
        ["embeddings.h5", "truncated or corrupt"],
        [o / "tok"],
    )


@case("tokenize", "wrong-kind-hdf5")
def _(w: World, o: Path) -> Built:
    return (
        ["tokenize", w.tok / "sids.h5", *TINY, "-o", o / "tok"],
        ["sids.h5", "mmesid.embeddings"],
        [o / "tok"],
    )


@case("tokenize", "truncated-safetensors")
def _(w: World, o: Path) -> Built:
    tok = _truncated(o, w.tok / "tokenizer.safetensors")
    args = ["tokenize", w.emb, "--tokenizer", tok, "--sids-out", o / "s.h5"]
    return args, ["tokenizer.safetensors", "truncated or corrupt"], [o / "s.h5"]


@case("tokenize", "wrong-kind-safetensors")
def _(w: World, o: Path) -> Built:
    args = [
        "tokenize",
        w.emb,
        "--tokenizer",
        w.collab / "sasrec.safetensors",
        "--sids-out",
        o / "s.h5",
    ]
    return args, ["sasrec.safetensors", "mmesid.tokenizer"], [o / "s.h5"]


@case("tokenize", "wrong-dimensions")
def _(w: World, o: Path) -> Built:
    values = np.ones((30, 5), np.float32)
    path = o / "e5.h5"
    write_embeddings(
        path, Embeddings(item_ids=w.files.item_ids, tables={"collab": EmbeddingTable(values)})
    )
    args = [
        "tokenize",
        path,
        "--tokenizer",
        w.tok / "tokenizer.safetensors",
        "--modalities",
        "collab",
        "--sids-out",
        o / "s.h5",
    ]
    return args, ["e5.h5", "5-d", "8-d"], [o / "s.h5"]


@case("tokenize", "folder-for-output")
def _(w: World, o: Path) -> Built:
    (o / "tok" / "sids.h5").mkdir(parents=True)
    return (
        ["tokenize", w.emb, *TINY, "-o", o / "tok"],
        ["sids.h5", "is a folder"],
        [o / "tok" / "tokenizer.safetensors", o / "tok" / "report.json"],
    )


@case("tokenize", "output-is-an-input")
def _(w: World, o: Path) -> Built:
    emb = o / "embeddings.h5"
    emb.write_bytes(w.emb.read_bytes())
    kept = _Unchanged(emb, emb.read_bytes())
    args = ["tokenize", emb, "--tokenizer", w.tok / "tokenizer.safetensors", "--sids-out", emb]
    return args, ["embeddings.h5", "is an input"], [kept]


@case("tokenize", "output-under-a-file")
def _(w: World, o: Path) -> Built:
    out = _file_in_the_way(o) / "tok"
    return ["tokenize", w.emb, *TINY, "-o", out], ["a-file", "not a folder"], [out]


@case("tokenize", "same-path-for-two-outputs")
def _(w: World, o: Path) -> Built:
    same = o / "x.out"
    args = ["tokenize", w.emb, *TINY, "--tokenizer-out", same, "--sids-out", same]
    return args, ["x.out", "two outputs"], [same]


for _flag, _value in (
    ("--epochs", "0"),
    ("--lr", "-1"),
    ("--batch-size", "0"),
    ("--seed", str(10**30)),
    ("--sinkhorn-epsilon", "0"),
):

    @case("tokenize", f"option-range{_flag}")
    def _(w: World, o: Path, flag: str = _flag, value: str = _value) -> Built:
        return ["tokenize", w.emb, *TINY, flag, value, "-o", o / "tok"], [flag], [o / "tok"]


# concordance ------------------------------------------------------------------------------


def _concordance(
    w: World, o: Path, codebook: Path, sids: Path, sequences: Path | None = None
) -> list[object]:
    return [
        "concordance", "--embeddings", w.emb, "-s", sequences or w.sequences,
        "--codebook", codebook, "--sids", sids, "--bootstrap", "0", "-o", o / "c.json",
    ]  # fmt: skip


@case("concordance", "mismatched-pair")
def _(w: World, o: Path) -> Built:
    args = _concordance(w, o, w.tok / "tokenizer.safetensors", w.tok2 / "sids.h5")
    return args, ["tok2/sids.h5", "another tokeniser"], [o / "c.json"]


@case("concordance", "run-tables-with-other-sids")
def _(w: World, o: Path) -> Built:
    args = _concordance(w, o, w.run_tok / "sid_tables.safetensors", w.tok2 / "sids.h5")
    return args, ["tok2/sids.h5", "not the sids.h5 the run"], [o / "c.json"]


@case("concordance", "wrong-kind-hdf5")
def _(w: World, o: Path) -> Built:
    args = _concordance(w, o, w.tok / "tokenizer.safetensors", w.emb)
    return args, ["embeddings.h5", "mmesid.sids"], [o / "c.json"]


@case("concordance", "truncated-safetensors")
def _(w: World, o: Path) -> Built:
    args = _concordance(w, o, _truncated(o, w.tok / "tokenizer.safetensors"), w.tok / "sids.h5")
    return args, ["tokenizer.safetensors", "truncated or corrupt"], [o / "c.json"]


@case("concordance", "unknown-id")
def _(w: World, o: Path) -> Built:
    seq = _text(o, "sequences.jsonl", '{"user_id": "u", "items": ["I000", "I001", "GONE"]}\n')
    args = _concordance(w, o, w.tok / "tokenizer.safetensors", w.tok / "sids.h5", seq)
    return args, ["sequences.jsonl:1", "'GONE'"], [o / "c.json"]


@case("concordance", "folder-for-output")
def _(w: World, o: Path) -> Built:
    (o / "c.json").mkdir()
    args = _concordance(w, o, w.tok / "tokenizer.safetensors", w.tok / "sids.h5")
    return args, ["c.json", "is a folder"], []


@case("concordance", "option-range")
def _(w: World, o: Path) -> Built:
    args = _concordance(w, o, w.tok / "tokenizer.safetensors", w.tok / "sids.h5") + [
        "--confidence",
        "2",
    ]
    return args, ["--confidence"], [o / "c.json"]


# finetune ---------------------------------------------------------------------------------


def _finetune(w: World, o: Path, tokenizer: Path, sids: Path, *extra: object) -> list[object]:
    return [
        "finetune", "--sequences", w.sequences, "--embeddings", w.emb, "--tokenizer", tokenizer,
        "--sids", sids, "--model", w.llama, "-o", o / "run", "--max-steps", "1", *extra,
    ]  # fmt: skip


@case("finetune", "mismatched-pair")
def _(w: World, o: Path) -> Built:
    args = _finetune(w, o, w.tok / "tokenizer.safetensors", w.tok2 / "sids.h5")
    return args, ["tok2/sids.h5", "another tokeniser"], [o / "run"]


@case("finetune", "wrong-dimensions")
def _(w: World, o: Path) -> Built:
    bad = tiny_files(o / "in", tokenizer_dims={"collab": 5, "text": 12})
    args = _finetune(w, o, bad.tokenizer, bad.sids)
    return args, ["tokenizer.safetensors", "5-d"], [o / "run"]


@case("finetune", "file-for-run-folder")
def _(w: World, o: Path) -> Built:
    target = _file_in_the_way(o)
    args = _finetune(w, o, w.files.tokenizer, w.files.sids)
    args[args.index("-o") + 1] = target
    return args, ["a-file", "not a folder"], []


for _flag, _value in (
    ("--lr", "-1"),
    ("--lora-dropout", "1"),
    ("--seed", "-1"),
    ("--warmup-steps", "-1"),
):

    @case("finetune", f"option-range{_flag}")
    def _(w: World, o: Path, flag: str = _flag, value: str = _value) -> Built:
        return _finetune(w, o, w.files.tokenizer, w.files.sids, flag, value), [flag], [o / "run"]


# evaluate ---------------------------------------------------------------------------------


def _evaluate(
    w: World, o: Path, *extra: object, items: Path | None = None, sequences: Path | None = None
) -> list[object]:
    return [
        "evaluate", "--sequences", sequences or w.sequences, "--items", items or w.items,
        "--json", o / "m.json", *extra,
    ]  # fmt: skip


@case("evaluate", "run-of-another-catalogue")
def _(w: World, o: Path) -> Built:
    args = _evaluate(w, o, w.run, "--k", "5", items=w.small_items, sequences=w.small_sequences)
    return args, ["run", "30 items", "the items file has 20"], [o / "m.json"]


@case("evaluate", "sasrec-of-another-catalogue")
def _(w: World, o: Path) -> Built:
    args = _evaluate(
        w,
        o,
        "--baseline",
        "sasrec",
        "--checkpoint",
        w.collab / "sasrec.safetensors",
        "--k",
        "5",
        items=w.small_items,
        sequences=w.small_sequences,
    )
    return args, ["sasrec.safetensors", "30 items"], [o / "m.json"]


@case("evaluate", "truncated-safetensors")
def _(w: World, o: Path) -> Built:
    ckpt = _truncated(o, w.collab / "sasrec.safetensors")
    args = _evaluate(w, o, "--baseline", "sasrec", "--checkpoint", ckpt)
    return args, ["sasrec.safetensors", "truncated or corrupt"], [o / "m.json"]


@case("evaluate", "unknown-id")
def _(w: World, o: Path) -> Built:
    seq = _text(o, "sequences.jsonl", '{"user_id": "u", "items": ["I000", "I001", "GONE"]}\n')
    args = _evaluate(w, o, "--baseline", "popularity", sequences=seq)
    return args, ["sequences.jsonl:1", "'GONE'"], [o / "m.json"]


@case("evaluate", "k-beyond-catalogue")
def _(w: World, o: Path) -> Built:
    args = _evaluate(w, o, "--baseline", "popularity", "--k", "5,5000")
    return args, ["items.jsonl", "--k 5000", "30 items"], [o / "m.json"]


@case("evaluate", "unknown-device")
def _(w: World, o: Path) -> Built:
    args = _evaluate(
        w,
        o,
        "--baseline",
        "sasrec",
        "--checkpoint",
        w.collab / "sasrec.safetensors",
        "--device",
        "tpu",
    )
    return args, ["--device 'tpu'"], [o / "m.json"]


@case("evaluate", "second-output-unwritable")
def _(w: World, o: Path) -> Built:
    (o / "m.json").mkdir()
    args = [
        "evaluate",
        "--baseline",
        "popularity",
        "--sequences",
        w.sequences,
        "--items",
        w.items,
        "--per-user",
        o / "ranks.jsonl",
        "--json",
        o / "m.json",
    ]
    return args, ["m.json", "is a folder"], [o / "ranks.jsonl"]


@case("evaluate", "output-under-a-file")
def _(w: World, o: Path) -> Built:
    out = _file_in_the_way(o) / "m.json"
    args = [
        "evaluate",
        "--baseline",
        "popularity",
        "--sequences",
        w.sequences,
        "--items",
        w.items,
        "--json",
        out,
    ]
    return args, ["a-file", "not a folder"], [out]


for _flag, _value in (
    ("--batch-size", "-3"),
    ("--batch-size", "0"),
    ("--max-users", "0"),
    ("--seed", str(10**30)),
):

    @case("evaluate", f"option-range{_flag}={_value}")
    def _(w: World, o: Path, flag: str = _flag, value: str = _value) -> Built:
        return _evaluate(w, o, "--baseline", "popularity", flag, value), [flag], [o / "m.json"]


# report, curve, collapse, inspect ------------------------------------------------------------


@case("report", "malformed-json")
def _(w: World, o: Path) -> Built:
    bad = _text(o, "r.json", '{"format": "mmesid.report",\n  "kind": \n}\n')
    return ["report", bad, "--markdown", o / "r.md"], ["r.json:3", "not valid JSON"], [o / "r.md"]


@case("report", "wrong-kind")
def _(w: World, o: Path) -> Built:
    return (
        ["report", w.tok / "report.json", "--markdown", o / "r.md"],
        ["report.json", "'tokenize'"],
        [o / "r.md"],
    )


@case("report", "folder-for-output")
def _(w: World, o: Path) -> Built:
    (o / "r.md").mkdir()
    good = o / "m.json"
    assert (
        run_cli(
            "evaluate",
            "--baseline",
            "popularity",
            "--sequences",
            w.sequences,
            "--items",
            w.items,
            "--json",
            good,
        )
        == 0
    )
    return ["report", good, "--markdown", o / "r.md"], ["r.md", "is a folder"], []


@case("curve", "not-a-run")
def _(w: World, o: Path) -> Built:
    return ["curve", o, "--json", o / "curve.json"], [str(o)], [o / "curve.json"]


@case("curve", "output-under-a-file")
def _(w: World, o: Path) -> Built:
    out = _file_in_the_way(o) / "curve.json"
    return ["curve", w.run, "--json", out], ["a-file", "not a folder"], [out]


@case("curve", "malformed-log-line")
def _(w: World, o: Path) -> Built:
    run = o / "run"
    run.mkdir()
    for name in ("config.json", "train_log.jsonl"):
        (run / name).write_bytes((w.run / name).read_bytes())
    with open(run / "train_log.jsonl", "a") as handle:
        handle.write('{"step": 2, "kind": \n')
    lines = len((run / "train_log.jsonl").read_text().splitlines())
    return (
        ["curve", run, "--json", o / "curve.json"],
        [f"train_log.jsonl:{lines}"],
        [o / "curve.json"],
    )


@case("collapse", "mismatched-pair")
def _(w: World, o: Path) -> Built:
    args = [
        "collapse",
        f"{w.tok / 'tokenizer.safetensors'}:collab",
        "--sids",
        w.tok2 / "sids.h5",
        "-o",
        o / "k.json",
    ]
    return args, ["tok2/sids.h5", "another tokeniser"], [o / "k.json"]


@case("collapse", "nan")
def _(w: World, o: Path) -> Built:
    return (
        ["collapse", _nan_embeddings(o, w), "-o", o / "k.json"],
        ["nan.h5", "NaN or infinity"],
        [o / "k.json"],
    )


@case("collapse", "projection-beyond-memory")
def _(w: World, o: Path) -> Built:
    args = ["collapse", f"{w.emb}:collab", "--project", str(10**12), "-o", o / "k.json"]
    return args, ["--project", "GiB"], [o / "k.json"]


@case("collapse", "option-range")
def _(w: World, o: Path) -> Built:
    return (
        ["collapse", f"{w.emb}:collab", "--project", "0", "-o", o / "k.json"],
        ["--project"],
        [o / "k.json"],
    )


@case("collapse", "folder-for-output")
def _(w: World, o: Path) -> Built:
    (o / "k.json").mkdir()
    return ["collapse", f"{w.emb}:collab", "-o", o / "k.json"], ["k.json", "is a folder"], []


@case("inspect", "truncated-hdf5")
def _(w: World, o: Path) -> Built:
    return ["inspect", _truncated(o, w.tok / "sids.h5")], ["sids.h5", "truncated or corrupt"], []


@case("inspect", "truncated-safetensors")
def _(w: World, o: Path) -> Built:
    return (
        ["inspect", _truncated(o, w.run / "heads.safetensors")],
        ["heads.safetensors", "truncated or corrupt"],
        [],
    )


@case("inspect", "not-an-artifact")
def _(w: World, o: Path) -> Built:
    return ["inspect", _text(o, "x.json", '{"hello": 1}')], ["x.json", "no format tag"], []


@dataclass
class _Unchanged:
    """An input the command was also to write to: it must keep its bytes."""

    path: Path
    data: bytes


def _partials(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".partial")]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.command}:{c.kind}" for c in CASES])
def test_bad_input(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: Case
) -> None:
    before = _digest(world.root)
    args, needles, outputs = case.build(world, tmp_path)
    capsys.readouterr()  # what building the case printed
    code = run_cli(*args)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("mmesid: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    for output in outputs:
        if isinstance(output, _Unchanged):
            assert output.path.read_bytes() == output.data, output.path
        else:
            assert not output.exists(), output
    assert not _partials(tmp_path) and not _partials(world.root)
    assert _digest(world.root) == before, "a failed command changed an input"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize(
    "argv",
    [
        lambda w, o: ["data", "stats", w.items, w.sequences, "--json", o / "s.json"],
        lambda w, o: ["tokenize", w.emb, *TINY, "-o", o / "tok"],
        lambda w, o: [
            "evaluate",
            "--baseline",
            "popularity",
            "--sequences",
            w.sequences,
            "--items",
            w.items,
            "--json",
            o / "m.json",
        ],
    ],
    ids=["data stats", "tokenize", "evaluate"],
)
def test_read_only_folder(world: World, tmp_path: Path, capsys, argv) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert run_cli(*argv(world, folder)) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "not writable" in err, err
        assert not any(folder.iterdir())
    finally:
        folder.chmod(0o755)


def test_write_refused_at_write_time(
    world: World, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder that passes the early check but refuses the write (root on a read-only
    folder, a full disk): still exit 2 naming the file, nothing left behind."""
    import errno
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    out = tmp_path / "m.json"
    args = ["--baseline", "popularity", "--sequences", world.sequences, "--items", world.items]
    assert run_cli("evaluate", *args, "--json", out) == 2
    err = capsys.readouterr().err.strip()  # the work ran (progress lines), then one error
    last = err.splitlines()[-1]
    assert last.startswith(f"mmesid: error: {out}: cannot write: Permission denied"), err
    assert "Traceback" not in err and err.count("error") == 1, err
    assert not any(tmp_path.iterdir())


def test_every_subcommand_has_cases() -> None:
    """A new subcommand cannot ship without bad-input cases here."""
    import typer.main

    from mmesid_cli.cli.main import app

    root = typer.main.get_command(app)
    names = set()
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        sub = getattr(command, "commands", None)
        names |= {f"{name} {s}" for s in sub} if sub else {name}
    covered = {c.command for c in CASES}
    assert names <= covered, f"no bad-input cases for: {sorted(names - covered)}"
