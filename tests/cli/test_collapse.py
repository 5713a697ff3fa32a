"""`mmesid collapse` end to end: tables, projections, tensors, SID spaces, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmesid_cli.artifacts.weights import write_weights
from tests.analysis.tiny import (
    random_codebooks,
    write_codebook_file,
    write_embedding_file,
    write_sid_file,
)
from tests.conftest import run_cli

IDS = [f"I{i:03d}" for i in range(60)]


@pytest.fixture
def embeddings(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    collab = rng.standard_normal((60, 8)).astype(np.float32)
    low = (rng.standard_normal((60, 3)) @ rng.standard_normal((3, 12))).astype(np.float32)
    return write_embedding_file(tmp_path / "emb.h5", IDS, {"collab": collab, "low": low})


def _rows(report: Path) -> dict[str, dict]:
    return {r["matrix"]: r for r in json.loads(report.read_text())["rows"]}


def test_projection_keeps_the_rank_of_the_table(embeddings: Path, tmp_path: Path) -> None:
    report, plot = tmp_path / "c.json", tmp_path / "c.svg"
    code = run_cli("collapse", embeddings, "--project", "40", "-o", report, "--plot", plot)
    assert code == 0
    rows = _rows(report)
    table, projected = rows["emb.h5:collab"], rows["emb.h5:collab → 40 (random linear)"]
    assert (table["rank"], table["shape"]) == (8, [60, 8])
    assert (projected["rank"], projected["shape"]) == (8, [60, 40])  # 40 dims, rank 8
    assert projected["projection"] == {"kind": "random linear, N(0, 1/d)", "dim": 40, "seed": 0}
    assert rows["emb.h5:low"]["rank"] == 3  # built as a 60×3 times 3×12 product
    assert len(table["singular_values"]) == 8
    assert table["effective_rank"] <= table["rank"]
    assert plot.read_text().lstrip().startswith("<?xml")


def test_any_tensor_and_the_sid_space(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    tokens = torch.from_numpy(rng.standard_normal((30, 5)).astype(np.float32)).to(torch.bfloat16)
    heads = tmp_path / "heads.safetensors"
    write_weights(heads, {"item_tokens": tokens}, kind="heads", config={})
    books, codes = random_codebooks(60, 6, levels=2, size=4, seed=2)
    tokenizer = write_codebook_file(tmp_path / "tokenizer.safetensors", {"text": books})
    sids = write_sid_file(tmp_path / "sids.h5", IDS, {"text": codes})
    report = tmp_path / "c.json"
    code = run_cli(
        "collapse", f"{heads}:item_tokens", f"{tokenizer}:text", "--sids", sids, "-o", report
    )
    assert code == 0
    rows = _rows(report)
    tensor_row = rows["heads.safetensors:item_tokens"]
    assert tensor_row["rank"] == 5 and tensor_row["dtype"] == "bfloat16"
    assert tensor_row["rtol"] == pytest.approx(30 * 2.0**-7)
    sid_row = rows["tokenizer.safetensors:text (SID space)"]
    explicit = books[0][codes[:, 0]] + books[1][codes[:, 1]]
    np.testing.assert_allclose(
        sid_row["singular_values"], np.linalg.svd(explicit, compute_uv=False), rtol=1e-5
    )


@pytest.mark.parametrize(
    ("source", "extra", "needles"),
    [
        ("{tmp}/missing.h5", [], ["missing.h5", "not found"]),
        ("{emb}:image", [], ["emb.h5", "no 'image' embeddings"]),
        ("{tmp}/notes.txt", [], ["notes.txt", "expected an .h5"]),
        ("{heads}", [], ["heads.safetensors", "name a tensor"]),
        ("{heads}:nope", [], ["heads.safetensors", "no tensor or codebook named 'nope'"]),
        ("{heads}:cube", [], ["heads.safetensors", "expected 2-D"]),
        ("{tmp}", [], ["not a finetune run"]),
        ("{emb}", ["--project", "0"], ["--project"]),
        ("{emb}", ["--plot", "{tmp}/c.gif"], ["c.gif", "plot format"]),
    ],
    ids=[
        "missing",
        "no-modality",
        "suffix",
        "no-name",
        "no-tensor",
        "3-d",
        "not-a-run",
        "project",
        "plot",
    ],  # fmt: skip
)
def test_bad_input(embeddings, tmp_path: Path, capsys, source, extra, needles) -> None:
    heads = tmp_path / "heads.safetensors"
    write_weights(heads, {"cube": torch.zeros(2, 2, 2)}, kind="heads", config={})
    (tmp_path / "notes.txt").write_text("not a matrix\n")
    fill = {"tmp": tmp_path, "emb": embeddings, "heads": heads}
    report = tmp_path / "c.json"
    code = run_cli(
        "collapse", source.format(**fill), *[e.format(**fill) for e in extra], "-o", report
    )
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    assert not report.exists()
