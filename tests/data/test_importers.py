"""Importers: public formats to items.jsonl + sequences.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmesid_cli.data import importers
from tests.conftest import run_cli, shared_dataset


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_amazon_txt_with_csv_maps_ids_to_asins(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "Toy.txt").write_text("1 1 2 3\n2 3 2\n")
    (raw / "Toy.csv").write_text(
        'asin,title,imUrl,id\nA1,"Soap, ""big""",http://x/1.jpg,1\nA2,"two\nlines",http://x/2.jpg,2\nA3,Ünïcode,u,3\n',
        encoding="utf-8",
    )
    assert run_cli("data", "import-amazon", raw, "-o", tmp_path / "out") == 0
    items = _lines(tmp_path / "out" / "items.jsonl")
    assert items == [
        {"item_id": "A1", "title": 'Soap, "big"', "image_url": "http://x/1.jpg"},
        {"item_id": "A2", "title": "two\nlines", "image_url": "http://x/2.jpg"},
        {"item_id": "A3", "title": "Ünïcode", "image_url": "u"},
    ]
    assert "Ünïcode" in (tmp_path / "out" / "items.jsonl").read_text(encoding="utf-8")
    assert _lines(tmp_path / "out" / "sequences.jsonl") == [
        {"user_id": "1", "items": ["A1", "A2", "A3"]},
        {"user_id": "2", "items": ["A3", "A2"]},
    ]


def test_amazon_txt_without_csv_uses_numeric_ids(tmp_path: Path) -> None:
    seq = tmp_path / "s.txt"
    seq.write_text("7 2 1\n")
    imported = importers.import_amazon(seq)
    assert [r["item_id"] for r in imported.items] == ["1", "2"]
    assert imported.sequences == [("7", ["2", "1"], None)]


def test_p5_layout(tmp_path: Path) -> None:
    (tmp_path / "sequential_data.txt").write_text("1 1 2\n2 2 1 2\n")
    maps = {"id2user": {"1": "UA", "2": "UB"}, "id2item": {"1": "X", "2": "Y"}}
    (tmp_path / "datamaps.json").write_text(json.dumps(maps))
    imported = importers.import_amazon(tmp_path)
    assert imported.items == [{"item_id": "X"}, {"item_id": "Y"}]
    assert imported.sequences == [("UA", ["X", "Y"], None), ("UB", ["Y", "X", "Y"], None)]


def test_movielens_100k_orders_by_time(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text("1\t10\t5\t300\n1\t20\t3\t100\n2\t10\t4\t50\n1\t30\t4\t100\n")
    genres = "|".join(["0"] * 19)
    (tmp_path / "u.item").write_bytes(
        f"10|Caf\xe9 (1995)|01-Jan-1995||url|{genres}\n20|B (1996)|x||u|{genres}\n".encode(
            "latin-1"
        )
    )
    imported = importers.import_movielens(tmp_path)
    # ties (user 1 at t=100) keep file order: 20 before 30
    assert imported.sequences[0] == ("1", ["20", "30", "10"], [100.0, 100.0, 300.0])
    assert imported.items[0] == {"item_id": "10", "title": "Café (1995)", "categories": []}


def test_movielens_1m(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_text("1::5::3::20\n1::6::3::10\n")
    (tmp_path / "movies.dat").write_text("5::Five (2000)::Drama|War\n")
    imported = importers.import_movielens(tmp_path)
    assert imported.sequences == [("1", ["6", "5"], [10.0, 20.0])]
    assert imported.items[1] == {"item_id": "6"}
    assert imported.items[0]["categories"] == ["Drama", "War"]


def test_recbole_atomic_files(tmp_path: Path) -> None:
    (tmp_path / "toy.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t3\t20\n1\t1\t3\t10\n"
    )
    (tmp_path / "toy.item").write_text(
        "item_id:token\tmovie_title:token_seq\tclass:token_seq\n1\tOne\tA B\n"
    )
    imported = importers.import_recbole(tmp_path)
    assert imported.sequences == [("1", ["1", "2"], [10.0, 20.0])]
    assert imported.items[0] == {"item_id": "1", "title": "One", "categories": ["A", "B"]}


def test_k_core_filter_is_iterated() -> None:
    seqs = [
        ("a", ["x", "y", "z"], None),
        ("b", ["x", "y"], None),
        ("c", ["z"], None),
        ("d", ["x", "y", "w"], None),
    ]
    imported = importers.Imported(
        items=[{"item_id": i} for i in "xyzw"], sequences=seqs, source="t"
    )
    core = importers.k_core(imported, 2)
    # w (1 interaction) and c (1 item) go; then z has 1 interaction left and goes too
    assert core.sequences == [
        ("a", ["x", "y"], None),
        ("b", ["x", "y"], None),
        ("d", ["x", "y"], None),
    ]
    assert [r["item_id"] for r in core.items] == ["x", "y"]


@pytest.mark.integration
@pytest.mark.parametrize("name", ["beauty", "beauty-p5"])
def test_reproduces_shared_data_record_for_record(tmp_path: Path, name: str) -> None:
    folder = shared_dataset(name)
    assert run_cli("data", "import-amazon", folder / "raw", "-o", tmp_path) == 0
    for file in ("items.jsonl", "sequences.jsonl"):
        assert (tmp_path / file).read_bytes() == (folder / file).read_bytes(), file
