"""Bad input: exit code 2, a one-line message naming the file (and line), nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmesid_cli.artifacts.embeddings import Embeddings, EmbeddingTable, write_embeddings
from mmesid_cli.artifacts.weights import write_weights
from tests.conftest import run_cli


def _stats(items: Path, sequences: Path, out: Path) -> int:
    return run_cli("data", "stats", items, sequences, "--json", out)


def _good_items(folder: Path) -> Path:
    items = folder / "items.jsonl"
    items.write_text('{"item_id": "a"}\n{"item_id": "b"}\n')
    return items


def _check(capsys: pytest.CaptureFixture[str], code: int, out: Path, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}*")), "a temporary file was left behind"


@pytest.mark.parametrize(
    ("sequences_text", "needles"),
    [
        (
            '{"user_id": "u", "items": ["a"]}\n{"user_id": "v", "items": ["a"\n',
            ["sequences.jsonl:2", "malformed JSON"],
        ),
        (
            '{"user_id": "u", "items": ["a", "zz"]}\n',
            ["sequences.jsonl:1", "'zz'", "not in the items file"],
        ),
        ("", ["sequences.jsonl", "empty"]),
        ("\n\n", ["sequences.jsonl", "holds no sequences"]),
    ],
    ids=["malformed-json", "unknown-item", "empty-file", "blank-lines"],
)
def test_bad_sequences(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sequences_text: str, needles: list[str]
) -> None:
    items = _good_items(tmp_path)
    sequences = tmp_path / "sequences.jsonl"
    sequences.write_text(sequences_text)
    out = tmp_path / "stats.json"
    _check(capsys, _stats(items, sequences, out), out, *needles)


def test_duplicate_item_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text('{"item_id": "a"}\n{"item_id": "b"}\n{"item_id": "a"}\n')
    sequences = tmp_path / "sequences.jsonl"
    sequences.write_text('{"user_id": "u", "items": ["a"]}\n')
    out = tmp_path / "stats.json"
    _check(
        capsys,
        _stats(items, sequences, out),
        out,
        "items.jsonl:3",
        "duplicate item_id 'a'",
        "line 1",
    )


def test_non_utf8_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    items = tmp_path / "items.jsonl"
    items.write_bytes(b'{"item_id": "a"}\n{"item_id": "caf\xe9"}\n')
    sequences = tmp_path / "sequences.jsonl"
    sequences.write_text('{"user_id": "u", "items": ["a"]}\n')
    out = tmp_path / "stats.json"
    _check(capsys, _stats(items, sequences, out), out, "items.jsonl:2", "not UTF-8")


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "stats.json"
    _check(
        capsys,
        _stats(tmp_path / "nope.jsonl", tmp_path / "s.jsonl", out),
        out,
        "nope.jsonl",
        "not found",
    )


def test_missing_raw_folder_for_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = run_cli("data", "import-amazon", tmp_path / "raw", "-o", out)
    assert code == 2
    assert "raw" in capsys.readouterr().err
    assert not out.exists()


def test_bad_raw_line_names_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seq = tmp_path / "Beauty.txt"
    seq.write_text("1 1 2\n2 3 x\n")
    out = tmp_path / "out"
    assert run_cli("data", "import-amazon", seq, "-o", out) == 2
    assert "Beauty.txt:2" in capsys.readouterr().err
    assert not out.exists()


def _h5(tmp_path: Path) -> Path:
    path = tmp_path / "embeddings.h5"
    table = EmbeddingTable(values=np.random.default_rng(0).normal(size=(50, 64)).astype(np.float32))
    write_embeddings(
        path, Embeddings(item_ids=[f"i{k}" for k in range(50)], tables={"text": table})
    )
    return path


def _safetensors(tmp_path: Path) -> Path:
    path = tmp_path / "tokenizer.safetensors"
    write_weights(
        path, {"codebook.text.1": torch.randn(64, 32)}, kind="tokenizer", config={"levels": 1}
    )
    return path


@pytest.mark.parametrize("make", [_h5, _safetensors], ids=["hdf5", "safetensors"])
def test_truncated_artifact(tmp_path: Path, capsys: pytest.CaptureFixture[str], make) -> None:
    path = make(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert run_cli("inspect", path) == 2
    err = capsys.readouterr().err
    assert path.name in err and "truncated or corrupt" in err


def test_wrong_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # an embeddings file handed to a reader of SID files
    from mmesid_cli.artifacts.sids import read_sids
    from mmesid_cli.errors import UserError

    path = _h5(tmp_path)
    with pytest.raises(
        UserError, match="expected a mmesid.sids file, found format 'mmesid.embeddings'"
    ):
        read_sids(path)
    # a JSON file that is not a report
    bogus = tmp_path / "x.json"
    bogus.write_text(json.dumps({"hello": 1}))
    assert run_cli("inspect", bogus) == 2
    assert "no format tag" in capsys.readouterr().err


def test_bad_option_value_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_cli(
        "evaluate", "--split", "tomorrow", "--sequences", tmp_path / "s", "--items", tmp_path / "i"
    )
    assert code == 2
    assert "Invalid value for '--split'" in capsys.readouterr().err
