"""`mmesid embed` end to end on tiny data, and its bad-input contract (exit 2, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmesid_cli.artifacts.embeddings import read_embeddings
from mmesid_cli.artifacts.reports import read_report
from mmesid_cli.data.records import read_items, read_sequences
from mmesid_cli.encoders.sasrec import load_sasrec
from mmesid_cli.evaluation import evaluate_scorer
from tests.conftest import run_cli, shared_dataset
from tests.encoders.test_image import save_tiny_clip, write_photo_items

SMALL_SASREC = [
    "--dim",
    "16",
    "--blocks",
    "1",
    "--max-epochs",
    "4",
    "--eval-every",
    "2",
    "--device",
    "cpu",
]


def _fails(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def _nothing_written(folder: Path, *names: str) -> None:
    for name in names:
        assert not (folder / name).exists(), name
    assert not list(folder.glob(".*.partial")), "a temporary file was left behind"


def test_text_and_collab_then_import_keeps_both(tiny_dataset, tmp_path, capsys) -> None:
    items, sequences = tiny_dataset
    out = tmp_path / "out" / "emb.h5"
    code = run_cli(
        "embed",
        items,
        "-m",
        "text",
        "-m",
        "collab",
        "--sequences",
        sequences,
        "-o",
        out,
        *SMALL_SASREC,
    )
    assert code == 0, capsys.readouterr().err
    emb = read_embeddings(out)
    item_table = read_items(items)
    assert emb.item_ids == item_table.ids
    assert emb.tables["text"].dim == 384 and emb.tables["collab"].dim == 16
    assert emb.tables["text"].attrs["template"] == "{title}"

    # The checkpoint reproduces the report's test figures and the collab table.
    report = read_report(out.parent / "sasrec_report.json", kind="sasrec")
    model = load_sasrec(out.parent / "sasrec.safetensors", item_ids=item_table.ids)
    np.testing.assert_array_equal(model.item_table.detach().numpy(), emb.tables["collab"].values)
    seqs = read_sequences(sequences, item_table)
    again = evaluate_scorer(model.score, seqs, "test").metrics
    assert set(report["test"]) == {f"{m}@{k}" for m in ("HR", "NDCG", "MRR") for k in (5, 10, 20)}
    assert report["test"] == pytest.approx(again)
    assert report["best_epoch"] in (2, 4) and report["settings"]["training"]["loss"] == "ce"

    # Adding an imported table keeps text and collab untouched.
    matrix = tmp_path / "m.npy"
    np.save(matrix, np.ones((len(item_table), 3), np.float32))
    assert run_cli("embed", items, "-m", "extra", "--import", matrix, "-o", out) == 0
    after = read_embeddings(out)
    assert sorted(after.tables) == ["collab", "extra", "text"]
    np.testing.assert_array_equal(after.tables["text"].values, emb.tables["text"].values)


def test_image_end_to_end_with_missing_images(tmp_path, capsys) -> None:
    items = write_photo_items(tmp_path / "data")
    clip = save_tiny_clip(tmp_path / "clip")
    out = tmp_path / "emb.h5"
    assert (
        run_cli("embed", items, "-m", "image", "--model", clip, "-o", out, "--device", "cpu") == 0
    )
    table = read_embeddings(out).tables["image"]
    assert table.present.tolist() == [True, True, False, True, True, False]
    assert table.dim == 16 and not table.values[~table.present].any()
    assert "2 items without an image got a zero row" in capsys.readouterr().err

    strict = tmp_path / "strict.h5"
    code = run_cli("embed", items, "-m", "image", "--model", clip, "-o", strict, "--require-all")
    _fails(capsys, code, "items.jsonl", "2 of 6 items have no image")
    _nothing_written(tmp_path, "strict.h5")


def test_unknown_model_path(tiny_dataset, tmp_path, capsys) -> None:
    items, _ = tiny_dataset
    code = run_cli(
        "embed", items, "-m", "text", "--model", tmp_path / "no" / "such", "-o", tmp_path / "e.h5"
    )
    _fails(capsys, code, "no such model folder", str(tmp_path / "no" / "such"))
    _nothing_written(tmp_path, "e.h5")


def test_template_naming_a_missing_field(tiny_dataset, tmp_path, capsys) -> None:
    items, sequences = tiny_dataset
    code = run_cli(
        "embed",
        items,
        "-m",
        "text",
        "-m",
        "collab",
        "--sequences",
        sequences,
        "--template",
        "{title} by {brand}",
        "-o",
        tmp_path / "e.h5",
    )
    _fails(capsys, code, str(items), "item 'I000'", "'brand'")
    _nothing_written(tmp_path, "e.h5", "sasrec.safetensors", "sasrec_report.json")


def test_items_that_do_not_match_an_existing_file(tiny_dataset, tmp_path, capsys) -> None:
    items, _ = tiny_dataset
    out = tmp_path / "e.h5"
    matrix = tmp_path / "m.npy"
    np.save(matrix, np.ones((30, 2), np.float32))
    assert run_cli("embed", items, "-m", "a", "--import", matrix, "-o", out) == 0
    before = out.read_bytes()
    other = tmp_path / "other.jsonl"
    lines = items.read_text().splitlines()
    other.write_text("\n".join(lines[1:] + lines[:1]) + "\n")  # same ids, another order
    code = run_cli("embed", other, "-m", "b", "--import", matrix, "-o", out)
    _fails(capsys, code, str(out), "another order", "write to a new file")
    assert out.read_bytes() == before
    _nothing_written(tmp_path)


def test_nan_in_imported_embeddings(tiny_dataset, tmp_path, capsys) -> None:
    items, _ = tiny_dataset
    matrix = np.ones((30, 4), np.float32)
    matrix[7, 2] = np.nan
    path = tmp_path / "m.npy"
    np.save(path, matrix)
    code = run_cli("embed", items, "-m", "collab", "--import", path, "-o", tmp_path / "e.h5")
    _fails(capsys, code, "m.npy", "NaN", "item 'I007'")
    _nothing_written(tmp_path, "e.h5")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-m", "audio"], "unknown --modality 'audio'"),
        (["-m", "collab"], "needs --sequences"),
        (["-m", "image"], "needs --model"),
        (["-m", "text", "-m", "image", "--model", "x"], "ambiguous"),
        ([], "at least one --modality"),
    ],
)
def test_option_errors(tiny_dataset, tmp_path, capsys, args, needle) -> None:
    items, _ = tiny_dataset
    _fails(capsys, run_cli("embed", items, *args, "-o", tmp_path / "e.h5"), needle)
    _nothing_written(tmp_path, "e.h5")


@pytest.mark.integration
def test_beauty_text_embeddings_for_a_slice(tmp_path) -> None:
    """Real titles: the first 200 Beauty items embed to distinct unit vectors with --normalize."""
    folder = shared_dataset("beauty")
    items = tmp_path / "items.jsonl"
    items.write_text("".join((folder / "items.jsonl").read_text().splitlines(keepends=True)[:200]))
    out = tmp_path / "e.h5"
    assert run_cli("embed", items, "-m", "text", "--normalize", "-o", out) == 0
    values = read_embeddings(out).tables["text"].values
    assert values.shape == (200, 384)
    np.testing.assert_allclose(np.linalg.norm(values, axis=1), 1.0, atol=1e-5)
    assert len({v.tobytes() for v in values}) == len(
        {json.loads(x)["title"] for x in items.read_text().splitlines()}
    )


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_fails_before_any_work(tiny_dataset, tmp_path, capsys) -> None:
    items, sequences = tiny_dataset
    args = ["-m", "collab", "--sequences", sequences, "--device", "cuda"]
    _fails(capsys, run_cli("embed", items, *args, "-o", tmp_path / "e.h5"), "CUDA is not available")
    _nothing_written(tmp_path, "e.h5", "sasrec.safetensors")
