"""Spaces read from artifacts in a reference item order (no CLI): codes, codebooks, tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmesid_cli.analysis.spaces import default_label, load_sources, read_matrices
from mmesid_cli.artifacts.codebooks import align_rows, aligned_codes, codes_for_codebooks
from mmesid_cli.errors import UserError
from tests.analysis.tiny import (
    dyadic_table,
    exact_codebooks,
    write_codebook_file,
    write_embedding_file,
    write_sid_file,
)

IDS = [f"I{i:02d}" for i in range(12)]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """Embeddings in IDS order; a tokeniser that reproduces them; SIDs and a table shuffled."""
    text = dyadic_table(12, 4, seed=1)
    books, codes = exact_codebooks(text)
    shuffled = np.random.default_rng(0).permutation(12)
    return {
        "embeddings": write_embedding_file(tmp_path / "emb.h5", IDS, {"text": text}),
        "codebook": write_codebook_file(
            tmp_path / "tok" / "tokenizer.safetensors", {"text": books}
        ),
        "sids": write_sid_file(tmp_path / "tok" / "sids.h5", IDS, {"text": codes}, shuffled),
        "other": write_embedding_file(
            tmp_path / "other.h5", [IDS[i] for i in shuffled], {"text": 2 * text[shuffled]}
        ),
    }


def test_align_rows_maps_ids_and_names_a_missing_needed_item() -> None:
    rows = align_rows(["a", "b", "c"], ["c", "a"], "x.h5", "emb.h5", needed=np.array([0, 2]))
    assert rows.tolist() == [1, -1, 0]
    with pytest.raises(UserError, match=r"x.h5: item 'b' of emb.h5 is not in this file \(1 of"):
        align_rows(["a", "b", "c"], ["c", "a"], "x.h5", "emb.h5", needed=np.array([1]))


def test_codes_for_codebooks_drops_only_a_dedup_suffix() -> None:
    codes = np.arange(12).reshape(4, 3)
    assert codes_for_codebooks(codes, {}, 3, "text", "s.h5") is codes
    np.testing.assert_array_equal(
        codes_for_codebooks(codes, {"dedup": "suffix"}, 2, "text", "s.h5"), codes[:, :2]
    )
    with pytest.raises(UserError, match="have 3 levels but the codebook file has 2"):
        codes_for_codebooks(codes, {}, 2, "text", "s.h5")


def test_sources_are_in_the_reference_order(files: dict[str, Path]) -> None:
    needed = np.arange(12)
    codes = aligned_codes(files["sids"], IDS, files["embeddings"], needed)["text"][0]
    sources = load_sources(
        [files["codebook"]],
        [files["sids"]],
        [(files["other"], "text")],
        [],
        IDS,
        files["embeddings"],
        needed,
    )
    assert [s.label for s in sources] == ["tok", "other:text"]
    text = dyadic_table(12, 4, seed=1)
    # The exact tokeniser's deepest SID space is the table itself, row for row (IDS order),
    # although sids.h5 holds its rows in another order; the same for the candidate table.
    tables, mask = sources[0].tables("text")
    assert mask is None and len(tables) == codes.shape[1]
    np.testing.assert_array_equal(tables[-1], text)
    (table,), _ = sources[1].tables("text")
    np.testing.assert_array_equal(table, 2 * text)
    # collapse reads the same SID space from the files, in the sids file's own order
    ((name, matrix, _, info),) = read_matrices(files["codebook"], "text", files["sids"])
    assert info["levels"] == codes.shape[1] and matrix.shape == text.shape
    assert default_label(files["codebook"], {"tok"}) == "tok#2"
