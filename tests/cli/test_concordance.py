"""`mmesid concordance` end to end on tiny artifacts built here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import kendalltau

from mmesid_cli.data.records import read_items, read_sequences
from tests.analysis.tiny import (
    dyadic_table,
    exact_codebooks,
    random_codebooks,
    write_codebook_file,
    write_embedding_file,
    write_sid_file,
)
from tests.conftest import run_cli, write_tiny_dataset


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    """Embeddings (text, collab), an exact tokeniser, a random one, SIDs in another order."""
    items, sequences = write_tiny_dataset(tmp_path / "data", n_users=30, n_items=24)
    ids = read_items(items).ids
    text, collab = dyadic_table(24, 5, seed=1), dyadic_table(24, 3, seed=2)
    embeddings = write_embedding_file(tmp_path / "emb.h5", ids, {"text": text, "collab": collab})
    exact = {m: exact_codebooks(t) for m, t in (("text", text), ("collab", collab))}
    rand = {
        m: random_codebooks(24, 4, levels=2, size=6, seed=s)
        for m, s in (("text", 3), ("collab", 4))
    }
    order = np.random.default_rng(0).permutation(24)  # SID rows in another order than embeddings
    paths = {"items": items, "sequences": sequences, "embeddings": embeddings}
    for name, spaces in (("exact", exact), ("random", rand)):
        folder = tmp_path / name
        paths[f"{name}_codebook"] = write_codebook_file(
            folder / "tokenizer.safetensors", {m: books for m, (books, _) in spaces.items()}
        )
        paths[f"{name}_sids"] = write_sid_file(
            folder / "sids.h5", ids, {m: codes for m, (_, codes) in spaces.items()}, order
        )
    return paths


def _run(setup: dict[str, Path], *extra: object) -> int:
    return run_cli(
        "concordance",
        "-e",
        setup["embeddings"],
        "-s",
        setup["sequences"],
        "--bootstrap",
        "30",
        "--workers",
        "1",
        *extra,
    )


def _rows(report: Path) -> dict[tuple[str, str, int | None], dict]:
    data = json.loads(report.read_text())
    return {(r["modality"], r["space"], r["level"]): r for r in data["rows"]}


def test_compares_spaces_per_level_with_every_setting(setup, tmp_path: Path) -> None:
    report, plot = tmp_path / "out" / "concordance.json", tmp_path / "out" / "tau.png"
    code = _run(
        setup,
        "--codebook", setup["exact_codebook"], "--sids", setup["exact_sids"],
        "--codebook", setup["random_codebook"], "--sids", setup["random_sids"],
        "--similarity", "dot", "-o", report, "--plot", plot,
    )  # fmt: skip
    assert code == 0
    data = json.loads(report.read_text())
    assert data["kind"] == "concordance"
    settings = data["settings"]
    assert (settings["similarity"], settings["target"], settings["bootstrap"]) == (
        "dot",
        "test",
        30,
    )
    assert settings["min_history"] == 2 and settings["max_history"] is None
    rows = _rows(report)
    assert set(rows) == {
        (m, s, level) for m in ("collab", "text") for s in ("exact", "random") for level in (1, 2)
    }
    for m in ("collab", "text"):
        full = rows[(m, "exact", 2)]
        assert full["tau_b"]["value"] == 1.0  # the codeword sum is the embedding, bit for bit
        assert full["tau_a"]["ci_low"] <= full["tau_a"]["value"] <= full["tau_a"]["ci_high"]
        random_row = rows[(m, "random", 2)]
        assert random_row["compared_with"] == {"space": "exact", "level": 2}
        assert random_row["delta_tau_b"]["value"] == pytest.approx(
            random_row["tau_b"]["value"] - 1.0
        )
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tau_of_a_candidate_matches_scipy(setup, tmp_path: Path) -> None:
    """A second table compared directly: tau-b per user as scipy computes it, averaged."""
    rng = np.random.default_rng(9)
    items = read_items(setup["items"])
    other = rng.standard_normal((24, 3)).astype(np.float32)
    candidate = write_embedding_file(tmp_path / "other.h5", items.ids, {"z": other})
    report = tmp_path / "r.json"
    code = _run(setup, "--candidate", f"{candidate}:z", "-m", "text", "--max-history", "4",
                "--similarity", "dot", "-o", report)  # fmt: skip
    assert code == 0
    row = _rows(report)[("text", "other:z", None)]
    text = dyadic_table(24, 5, seed=1).astype(np.float64)
    taus = []
    for seq in read_sequences(setup["sequences"], items).items:
        history, target = seq[:-1][-4:], seq[-1]
        taus.append(
            kendalltau(text[history] @ text[target], other[history] @ other[target]).statistic
        )
    assert row["cases"] == len(taus)
    assert row["tau_b"]["value"] == pytest.approx(np.nanmean(taus), abs=1e-9)


def test_accepts_any_mmesid_file_in_the_codebook_layout(setup, tmp_path: Path) -> None:
    books, _ = exact_codebooks(dyadic_table(24, 5, seed=1))
    tables = write_codebook_file(
        tmp_path / "run" / "sid_tables.safetensors", {"text": books}, kind="sid-tables"
    )
    report = tmp_path / "r.json"
    assert _run(setup, "--codebook", tables, "--sids", setup["exact_sids"], "-o", report) == 0
    assert _rows(report)[("text", "run", 2)]["tau_b"]["value"] == 1.0


def test_a_dedup_suffix_column_is_ignored_only_when_declared(setup, tmp_path, capsys) -> None:
    ids = read_items(setup["items"]).ids
    books, codes = exact_codebooks(dyadic_table(24, 5, seed=1))
    with_suffix = np.concatenate([codes, np.zeros((24, 1), dtype=int)], axis=1)
    declared = write_sid_file(
        tmp_path / "dedup.h5", ids, {"text": with_suffix}, attrs={"text": {"dedup": "suffix"}}
    )
    report = tmp_path / "r.json"
    assert _run(setup, "--codebook", setup["exact_codebook"], "--sids", declared, "-o", report) == 0
    assert _rows(report)[("text", "exact", 2)]["tau_b"]["value"] == 1.0
    silent = write_sid_file(tmp_path / "extra.h5", ids, {"text": with_suffix})
    report.unlink()
    capsys.readouterr()
    code = _run(setup, "--codebook", setup["exact_codebook"], "--sids", silent, "-o", report)
    _check_bad(capsys, code, report, "extra.h5", "have 3 levels but the codebook file has 2")


def _check_bad(capsys, code: int, report: Path, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    assert not report.exists()
    assert not list(report.parent.glob(f".{report.name}*"))


def test_item_missing_from_sids_is_a_user_error(setup, tmp_path: Path, capsys) -> None:
    ids = read_items(setup["items"]).ids
    short = write_sid_file(tmp_path / "short.h5", ids[:-3], {"text": np.zeros((21, 2), dtype=int)})
    report = tmp_path / "r.json"
    code = _run(setup, "--codebook", setup["exact_codebook"], "--sids", short, "-o", report)
    _check_bad(capsys, code, report, "short.h5", "is not in this file")


def test_codes_beyond_the_codebook_are_a_user_error(setup, tmp_path: Path, capsys) -> None:
    ids = read_items(setup["items"]).ids
    codes = np.full((24, 2), 50)
    bad = write_sid_file(tmp_path / "bad.h5", ids, {"text": codes, "collab": codes})
    report = tmp_path / "r.json"
    code = _run(setup, "--codebook", setup["random_codebook"], "--sids", bad, "-o", report)
    _check_bad(capsys, code, report, "bad.h5", "code 50 at level 1")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        ([], ["nothing to compare"]),
        (["--codebook", "{exact_codebook}"], ["--codebook needs --sids"]),
        (["--candidate", "{embeddings}:image"], ["emb.h5", "no 'image' embeddings"]),
        (["--candidate", "{embeddings}", "-m", "image"], ["emb.h5", "no 'image' embeddings"]),
        (["--candidate", "{embeddings}", "--plot", "{tmp}/tau.txt"], ["tau.txt", "plot format"]),
        (["--codebook", "{sequences}", "--sids", "{exact_sids}"], ["sequences.jsonl", "safetensors"]),
        (["--codebook", "{exact_codebook}", "--sids", "{exact_sids}", "--max-history", "1"], ["--max-history"]),
    ],
    ids=["no-space", "no-sids", "candidate-modality", "reference-modality", "plot-suffix",
         "not-safetensors", "max-history"],
)  # fmt: skip
def test_bad_options_and_files(setup, tmp_path: Path, capsys, args, needles) -> None:
    report = tmp_path / "r.json"
    fill = {**{k: str(v) for k, v in setup.items()}, "tmp": str(tmp_path)}
    code = _run(setup, *[a.format(**fill) for a in args], "-o", report)
    _check_bad(capsys, code, report, *needles)


def test_plot_without_matplotlib_is_a_user_error(
    setup, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    report = tmp_path / "r.json"
    code = _run(
        setup, "--candidate", setup["embeddings"], "--plot", tmp_path / "p.png", "-o", report
    )
    _check_bad(capsys, code, report, "p.png", "mmesid[plots]")
    assert not (tmp_path / "p.png").exists()
