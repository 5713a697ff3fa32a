"""Importing external embeddings: formats, id orders, a padding row, and what is refused."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

from mmesid_cli.data.records import read_items
from mmesid_cli.encoders.imported import import_embeddings, load_matrix
from mmesid_cli.errors import UserError
from tests.conftest import shared_dataset


@pytest.fixture
def items(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps({"item_id": f"i{j}"}) + "\n" for j in range(5)))
    return read_items(path)


def _matrix() -> np.ndarray:
    return np.arange(5 * 3, dtype=np.float32).reshape(5, 3)  # row j belongs to item i{j}


@pytest.mark.parametrize("suffix", [".npy", ".pt", ".pkl"])
def test_each_format_round_trips(tmp_path, items, suffix) -> None:
    path = tmp_path / f"emb{suffix}"
    if suffix == ".npy":
        np.save(path, _matrix())
    elif suffix == ".pt":
        torch.save(torch.from_numpy(_matrix()), path)
    else:
        path.write_bytes(
            pickle.dumps(torch.from_numpy(_matrix()))
        )  # a pickled tensor, like the reference's
    values, attrs = import_embeddings(path, items)
    np.testing.assert_array_equal(values, _matrix())
    assert attrs["encoder"] == "imported" and len(attrs["imported_sha256"]) == 64


def test_a_pickled_numpy_array_and_a_dict_with_one_tensor(tmp_path, items) -> None:
    pkl = tmp_path / "emb.pkl"
    pkl.write_bytes(pickle.dumps(_matrix().astype(np.float64)))
    np.testing.assert_array_equal(load_matrix(pkl), _matrix())
    pt = tmp_path / "emb.pt"
    torch.save({"item_embeddings": torch.from_numpy(_matrix())}, pt)
    np.testing.assert_array_equal(load_matrix(pt), _matrix())


def test_an_id_order_file_and_a_padding_row(tmp_path, items) -> None:
    order = [3, 0, 4, 1, 2]
    table = np.vstack([np.full((1, 3), 99.0, np.float32), _matrix()[order]])  # row 0: padding
    path = tmp_path / "emb.npy"
    np.save(path, table)
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"i{j}\n" for j in order))
    values, attrs = import_embeddings(path, items, id_order=ids, drop_first_row=True)
    np.testing.assert_array_equal(values, _matrix())  # back in items.jsonl order
    assert attrs["dropped_first_row"] is True
    with pytest.raises(UserError, match="has 6 rows, but the id order lists 5 items"):
        import_embeddings(path, items, id_order=ids)


def test_nan_is_refused_and_names_the_item(tmp_path, items) -> None:
    table = _matrix()
    table[2, 1] = np.nan
    path = tmp_path / "emb.npy"
    np.save(path, table)
    with pytest.raises(
        UserError, match=r"emb\.npy: NaN or infinity in 1 item rows \(first: item 'i2'\)"
    ):
        import_embeddings(path, items)


def test_ids_that_do_not_match_the_items_file(tmp_path, items) -> None:
    path = tmp_path / "emb.npy"
    np.save(path, _matrix())
    ids = tmp_path / "ids.txt"
    ids.write_text("i0\ni1\ni2\ni3\nzzz\n")
    with pytest.raises(UserError, match=r"ids.txt:5: item 'zzz' is not in the items file"):
        import_embeddings(path, items, id_order=ids)
    ids.write_text("i0\ni1\ni0\ni3\ni4\n")
    with pytest.raises(UserError, match=r"ids\.txt:3: item 'i0' is listed twice"):
        import_embeddings(path, items, id_order=ids)


def test_a_pickle_that_would_run_code_is_refused(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "emb.pkl"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(UserError, match="refusing to load"):
        load_matrix(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("content", "message"), [(np.zeros(4), "shape"), (np.array([["a", "b"]]), "expected numbers")]
)
def test_not_a_matrix(tmp_path, content, message) -> None:
    path = tmp_path / "emb.npy"
    np.save(path, content)
    with pytest.raises(UserError, match=message):
        load_matrix(path)


def test_unknown_suffix(tmp_path) -> None:
    path = tmp_path / "emb.csv"
    path.write_text("1,2\n")
    with pytest.raises(UserError, match="unknown file type"):
        load_matrix(path)


@pytest.mark.integration
def test_the_reference_sasrec_table_pickled_on_cuda() -> None:
    """The reference's 64-d table: a CUDA tensor pickle, row 0 padding, row i = item id i."""
    folder = shared_dataset("beauty")
    items = read_items(folder / "items.jsonl")
    raw = folder / "raw" / "SASRec_item_embed_new.pkl"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(raw, map_location="cpu", weights_only=False)  # what a plain load does
    values, _ = import_embeddings(raw, items, drop_first_row=True)
    assert values.shape == (12086, 64)
    assert np.isfinite(values).all() and np.linalg.norm(values, axis=1).min() > 0
