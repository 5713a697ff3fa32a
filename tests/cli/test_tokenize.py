"""`mmesid tokenize` end to end on tiny embeddings built here."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mmesid_cli.artifacts.embeddings import Embeddings, EmbeddingTable, write_embeddings
from mmesid_cli.artifacts.sids import read_sids
from mmesid_cli.tokenizer import export_tensors, load_tokenizer, quantized_latents
from mmesid_cli.tokenizer.quantizer import nearest_codes
from tests.conftest import run_cli

TINY = [
    "--preset",
    "cpu",
    "--e-dim",
    "4",
    "--hidden",
    "8",
    "--levels",
    "2",
    "--codebook-size",
    "4",
    "--batch-size",
    "16",
    "--epochs",
    "2",
    "--kmeans-iters",
    "2",
]


def write_tiny_embeddings(path: Path, n: int = 40, seed: int = 0, text_dim: int = 6) -> list[str]:
    rng = np.random.default_rng(seed)
    ids = [f"I{i:03d}" for i in range(n)]
    tables = {
        "collab": EmbeddingTable(rng.normal(size=(n, 4)).astype(np.float32)),
        "text": EmbeddingTable(rng.normal(size=(n, text_dim)).astype(np.float32)),
    }
    write_embeddings(path, Embeddings(item_ids=ids, tables=tables))
    return ids


@pytest.fixture
def emb(tmp_path: Path) -> Path:
    path = tmp_path / "embeddings.h5"
    write_tiny_embeddings(path)
    return path


def test_train_writes_tokenizer_sids_and_report(emb: Path, tmp_path: Path) -> None:
    out = tmp_path / "tok"
    assert run_cli("tokenize", emb, *TINY, "-o", out) == 0
    sids = read_sids(out / "sids.h5")
    assert sorted(sids.codes) == ["collab", "text"]
    assert sids.codes["text"].shape == (40, 2)
    assert sids.item_ids[0] == "I000"
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "tokenize" and report["mode"] == "train"
    text = report["modalities"]["text"]
    for key in (
        "recon_mse",
        "recon_cosine",
        "mmd",
        "unique_sid_fraction",
        "collision_rate",
        "largest_collision_group",
    ):
        assert key in text
    assert [lv["level"] for lv in text["levels"]] == [1, 2]
    assert len(report["training"]["loss_curve"]) == 2
    assert report["config"]["e_dim"] == 4 and report["preset"] == "cpu"
    # the SIDs are the nearest-code search over the file's codebooks, applied to the encoder
    model = load_tokenizer(out / "tokenizer.safetensors")
    with h5py.File(emb, "r") as handle:
        x = torch.from_numpy(handle["embeddings/text"][()])
    residual = model.latent("text", x)
    books = model.codebooks("text")
    for level, book in enumerate(books):
        codes = nearest_codes(residual, book)
        assert np.array_equal(codes.numpy(), sids.codes["text"][:, level])
        residual = residual - book[codes]
    latents = quantized_latents(books, sids.codes["text"])
    assert np.allclose(
        latents, model.codebook_sum("text", torch.from_numpy(sids.codes["text"])).numpy(), atol=1e-6
    )


def test_same_seed_gives_byte_identical_sids(emb: Path, tmp_path: Path) -> None:
    assert run_cli("tokenize", emb, *TINY, "-o", tmp_path / "a") == 0
    assert run_cli("tokenize", emb, *TINY, "-o", tmp_path / "b") == 0
    assert run_cli("tokenize", emb, *TINY, "--seed", "3", "-o", tmp_path / "c") == 0
    a = (tmp_path / "a" / "sids.h5").read_bytes()
    assert a == (tmp_path / "b" / "sids.h5").read_bytes()
    assert a != (tmp_path / "c" / "sids.h5").read_bytes()
    # the tokenisers are equal too (as weights: safetensors orders its metadata arbitrarily)
    ta = export_tensors(load_tokenizer(tmp_path / "a" / "tokenizer.safetensors"))
    tb = export_tensors(load_tokenizer(tmp_path / "b" / "tokenizer.safetensors"))
    assert all(torch.equal(v, tb[k]) for k, v in ta.items())


def test_resume_continues_to_the_same_result(emb: Path, tmp_path: Path) -> None:
    at = TINY.index("--epochs")
    base = TINY[:at] + TINY[at + 2 :]
    assert (
        run_cli("tokenize", emb, *base, "--epochs", "3", "--keep", "last", "-o", tmp_path / "full")
        == 0
    )
    assert (
        run_cli("tokenize", emb, *base, "--epochs", "1", "--keep", "last", "-o", tmp_path / "part")
        == 0
    )
    assert (tmp_path / "part" / "checkpoint.safetensors").exists()
    assert (
        run_cli(
            "tokenize",
            emb,
            *base,
            "--epochs",
            "3",
            "--keep",
            "last",
            "--resume",
            "-o",
            tmp_path / "part",
        )
        == 0
    )
    report = json.loads((tmp_path / "part" / "report.json").read_text())
    assert report["training"]["resumed"] and report["training"]["epochs_run"] == 3
    assert (tmp_path / "full" / "sids.h5").read_bytes() == (
        tmp_path / "part" / "sids.h5"
    ).read_bytes()


def test_encode_new_items_with_a_trained_tokenizer(emb: Path, tmp_path: Path) -> None:
    assert run_cli("tokenize", emb, *TINY, "-o", tmp_path / "tok") == 0
    trained = read_sids(tmp_path / "tok" / "sids.h5")
    # the same 40 items plus 10 new ones, in another order
    rng = np.random.default_rng(5)
    with h5py.File(emb, "r") as handle:
        old = {m: handle[f"embeddings/{m}"][()] for m in ("collab", "text")}
    new = {
        m: np.concatenate([rng.normal(size=(10, v.shape[1])).astype(np.float32), v[::-1]])
        for m, v in old.items()
    }
    ids = [f"N{i}" for i in range(10)] + trained.item_ids[::-1]
    more = tmp_path / "more.h5"
    write_embeddings(
        more, Embeddings(item_ids=ids, tables={m: EmbeddingTable(v) for m, v in new.items()})
    )
    out = tmp_path / "new_sids.h5"
    assert (
        run_cli(
            "tokenize",
            more,
            "--tokenizer",
            tmp_path / "tok" / "tokenizer.safetensors",
            "--sids-out",
            out,
        )
        == 0
    )
    encoded = read_sids(out)
    for m in ("collab", "text"):
        assert np.array_equal(encoded.codes[m][10:], trained.codes[m][::-1])
        assert encoded.codes[m].shape == (50, 2)
    assert not (tmp_path / "tokenizer.safetensors").exists()


def test_dedup_suffix_makes_sids_unique(emb: Path, tmp_path: Path) -> None:
    assert (
        run_cli("tokenize", emb, *TINY, "--levels", "1", "--dedup", "suffix", "-o", tmp_path / "d")
        == 0
    )
    codes = read_sids(tmp_path / "d" / "sids.h5").codes["text"]
    assert codes.shape == (40, 2)  # 1 level + the suffix
    assert len(np.unique(codes, axis=0)) == 40
    report = json.loads((tmp_path / "d" / "report.json").read_text())
    assert report["modalities"]["text"]["collision_rate"] > 0  # measured before the suffix


def _no_output(out: Path) -> bool:
    return not out.exists()


def test_missing_modality_is_a_user_error(
    emb: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    assert run_cli("tokenize", emb, *TINY, "--modalities", "collab,image", "-o", out) == 2
    err = capsys.readouterr().err
    assert "embeddings.h5" in err and "'image'" in err and len(err.strip().splitlines()) == 1
    assert _no_output(out)


def test_codebook_larger_than_the_item_set_is_a_user_error(
    emb: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    assert run_cli("tokenize", emb, *TINY, "--codebook-size", "64", "-o", out) == 2
    err = capsys.readouterr().err
    assert "embeddings.h5" in err and "64" in err
    assert _no_output(out)


def test_tokenizer_with_another_input_dimension_is_a_user_error(
    emb: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert run_cli("tokenize", emb, *TINY, "-o", tmp_path / "tok") == 0
    other = tmp_path / "other.h5"
    write_tiny_embeddings(other, text_dim=9)
    out = tmp_path / "new"
    code = run_cli(
        "tokenize", other, "--tokenizer", tmp_path / "tok" / "tokenizer.safetensors", "-o", out
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "other.h5" in err and "9-d" in err and "6-d" in err
    assert _no_output(out)


def test_nan_in_the_input_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "nan.h5"
    write_tiny_embeddings(path)
    with h5py.File(path, "r+") as handle:  # the writer refuses NaN, so poison the file directly
        values = handle["embeddings/text"][()]
        values[7, 2] = np.nan
        handle["embeddings/text"][...] = values
    out = tmp_path / "out"
    assert run_cli("tokenize", path, *TINY, "-o", out) == 2
    err = capsys.readouterr().err
    assert "nan.h5" in err and "NaN" in err and "row 7" in err
    assert _no_output(out)


def test_presets_and_reference_flags(emb: Path, tmp_path: Path) -> None:
    tiny = TINY[2:]  # without --preset
    args = [*tiny, "--preset", "paper", "--reference-beta", "--reference-commitment"]
    assert run_cli("tokenize", emb, *args, "-o", tmp_path / "p") == 0
    config = json.loads((tmp_path / "p" / "report.json").read_text())["config"]
    assert config["lr"] == 2e-4 and config["e_dim"] == 4 and config["hidden"] == [8]
    assert config["beta"] == 0.01 and config["commit_all_levels"] is False
    assert config["sinkhorn_levels"] == [-1] and config["sinkhorn_epsilon"] == 0.003
    assert run_cli("tokenize", emb, *tiny, "--preset", "cpu", "-o", tmp_path / "c") == 0
    config = json.loads((tmp_path / "c" / "report.json").read_text())["config"]
    assert config["lr"] == 3e-4 and config["beta"] == 0.25 and config["commit_all_levels"]
    assert (
        run_cli("tokenize", emb, *tiny, "--beta", "0.1", "--reference-beta", "-o", tmp_path / "x")
        == 2
    )
    assert not (tmp_path / "x").exists()


def test_a_time_cap_that_fires_is_reported(
    emb: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "tok"
    assert run_cli("tokenize", emb, *TINY, "--epochs", "4", "--max-minutes", "0", "-o", out) == 0
    training = json.loads((out / "report.json").read_text())["training"]
    assert (training["stopped_by"], training["epochs_run"], training["max_minutes"]) == (
        "time_cap",
        1,
        0.0,
    )
    err = capsys.readouterr().err
    assert "time cap stopped training after epoch 1 of 4" in err
    assert "stopped by the --max-minutes 0 time cap" in err
    assert run_cli("tokenize", emb, *TINY, "-o", tmp_path / "full") == 0
    full = json.loads((tmp_path / "full" / "report.json").read_text())["training"]
    assert full["stopped_by"] == "epochs" and full["max_minutes"] is None
