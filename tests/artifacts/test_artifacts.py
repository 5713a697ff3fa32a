"""Every artifact round-trips and is readable with plain h5py / safetensors."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors import safe_open

from mmesid_cli.artifacts.embeddings import (
    Embeddings,
    EmbeddingTable,
    add_table,
    read_embeddings,
    write_embeddings,
)
from mmesid_cli.artifacts.reports import read_report, write_report
from mmesid_cli.artifacts.sids import Sids, read_sids, write_sids
from mmesid_cli.artifacts.weights import read_weights, write_weights
from mmesid_cli.errors import UserError
from tests.conftest import run_cli

IDS = ["B00Ä", "x1", "y2", "z3"]


def test_embeddings_round_trip_and_plain_h5py(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    text = rng.normal(size=(4, 8)).astype(np.float32)
    image = rng.normal(size=(4, 3)).astype(np.float32)
    present = np.array([True, False, True, True])
    emb = Embeddings(
        item_ids=IDS,
        tables={
            "text": EmbeddingTable(text, attrs={"encoder": "m"}),
            "image": EmbeddingTable(image, present),
        },
    )
    path = tmp_path / "e.h5"
    write_embeddings(path, emb)
    back = read_embeddings(path)
    assert back.item_ids == IDS
    np.testing.assert_array_equal(back.tables["text"].values, text)
    np.testing.assert_array_equal(back.tables["image"].present, present)
    assert back.tables["text"].attrs["encoder"] == "m"
    with h5py.File(path, "r") as handle:
        assert handle.attrs["format"] == "mmesid.embeddings"
        assert [x.decode() for x in handle["item_ids"][()]] == IDS
        np.testing.assert_array_equal(handle["embeddings/image"][()], image)
        np.testing.assert_array_equal(handle["present/image"][()], present)
    assert read_embeddings(path, ["image"]).tables.keys() == {"image"}


def test_add_table_keeps_others_and_checks_ids(tmp_path: Path) -> None:
    path = tmp_path / "e.h5"
    add_table(path, IDS, "text", EmbeddingTable(np.ones((4, 2), np.float32)))
    add_table(path, IDS, "collab", EmbeddingTable(np.zeros((4, 5), np.float32)))
    assert set(read_embeddings(path).tables) == {"text", "collab"}
    before = path.read_bytes()
    with pytest.raises(UserError, match="another order"):
        add_table(path, IDS[::-1], "image", EmbeddingTable(np.ones((4, 2), np.float32)))
    assert path.read_bytes() == before


def test_embeddings_reject_nan(tmp_path: Path) -> None:
    values = np.ones((4, 2), np.float32)
    values[2, 1] = np.nan
    with pytest.raises(UserError, match="NaN"):
        write_embeddings(tmp_path / "e.h5", Embeddings(IDS, {"text": EmbeddingTable(values)}))
    assert not (tmp_path / "e.h5").exists()


def test_sids_round_trip_and_plain_h5py(tmp_path: Path) -> None:
    codes = np.array([[1, 2], [3, 4], [1, 2], [300, 0]])
    sids = Sids(
        item_ids=IDS,
        codes={"text": codes},
        attrs={"text": {"collision_rate": 0.25}},
        file_attrs={"seed": 3},
    )
    path = tmp_path / "s.h5"
    write_sids(path, sids)
    back = read_sids(path)
    np.testing.assert_array_equal(back.codes["text"], codes)
    assert back.attrs["text"]["collision_rate"] == 0.25
    assert back.file_attrs["seed"] == 3
    with h5py.File(path, "r") as handle:
        np.testing.assert_array_equal(handle["codes/text"][()], codes)


def test_weights_round_trip_and_plain_safetensors(tmp_path: Path) -> None:
    tensors = {"codebook.text.1": torch.randn(4, 3), "encoder.0.weight": torch.randn(2, 2)}
    path = tmp_path / "t.safetensors"
    write_weights(path, tensors, kind="tokenizer", config={"levels": 1, "modalities": ["text"]})
    back = read_weights(path, kind="tokenizer")
    assert back.config == {"levels": 1, "modalities": ["text"]}
    for name, tensor in tensors.items():
        assert torch.equal(back.tensors[name], tensor)
    with safe_open(str(path), framework="np") as handle:
        assert handle.metadata()["format"] == "mmesid.tokenizer"
        assert json.loads(handle.metadata()["config"])["levels"] == 1
        np.testing.assert_array_equal(
            handle.get_tensor("codebook.text.1"), tensors["codebook.text.1"].numpy()
        )
    with pytest.raises(UserError, match="expected a mmesid.sasrec file"):
        read_weights(path, kind="sasrec")


def test_report_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    write_report(path, "test", {"value": np.float32(0.5), "nan": float("nan"), "arr": np.arange(2)})
    back = read_report(path, kind="test")
    assert back["value"] == 0.5 and back["nan"] is None and back["arr"] == [0, 1]
    with pytest.raises(UserError, match="'test' report, expected 'other'"):
        read_report(path, kind="other")


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "e.h5"
    write_embeddings(path, Embeddings(IDS, {"text": EmbeddingTable(np.ones((4, 2), np.float32))}))
    with h5py.File(path, "a") as handle:
        handle.attrs["format_version"] = 99
    with pytest.raises(UserError, match="newer than this mmesid reads"):
        read_embeddings(path)


def test_inspect_prints_each_artifact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_embeddings(
        tmp_path / "e.h5", Embeddings(IDS, {"text": EmbeddingTable(np.ones((4, 2), np.float32))})
    )
    write_sids(tmp_path / "s.h5", Sids(IDS, {"text": np.zeros((4, 3), np.int64)}))
    write_weights(tmp_path / "w.safetensors", {"a": torch.zeros(2)}, kind="heads", config={"k": 1})
    write_report(tmp_path / "r.json", "demo", {"x": 1})
    for name, needle in [
        ("e.h5", "4 × 2 float32"),
        ("s.h5", "4 × 3 levels, 1 distinct"),
        ("w.safetensors", "mmesid.heads"),
        ("r.json", "demo"),
    ]:
        assert run_cli("inspect", tmp_path / name) == 0
        assert needle in capsys.readouterr().out
