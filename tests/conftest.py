"""Shared fixtures: tiny data sets built in the test, the CLI runner, the real data folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mmesid_cli.cli.main import main

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def shared_dataset(name: str) -> Path:
    """A real data set from ../shared/data, or skip: a user's clone does not have it."""
    folder = SHARED_DATA / name
    if not (folder / "items.jsonl").exists():
        pytest.skip(
            f"real data set {folder} is absent (it ships only beside the project's own checkout)"
        )
    return folder


def run_cli(*args: str | os.PathLike[str]) -> int:
    """Run ``mmesid ARGS`` in-process; return its exit code."""
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def write_tiny_dataset(
    folder: Path,
    n_users: int = 40,
    n_items: int = 30,
    seed: int = 0,
    min_len: int = 4,
    max_len: int = 12,
) -> tuple[Path, Path]:
    """items.jsonl + sequences.jsonl with titles and a little sequential structure."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    items = folder / "items.jsonl"
    sequences = folder / "sequences.jsonl"
    with open(items, "w", encoding="utf-8") as handle:
        for i in range(n_items):
            handle.write(
                json.dumps({"item_id": f"I{i:03d}", "title": f"item number {i} of group {i % 5}"})
                + "\n"
            )
    with open(sequences, "w", encoding="utf-8") as handle:
        for u in range(n_users):
            length = int(rng.integers(min_len, max_len + 1))
            start = int(rng.integers(n_items))
            seq = [(start + step * (1 + u % 3)) % n_items for step in range(length)]
            handle.write(
                json.dumps({"user_id": f"U{u}", "items": [f"I{i:03d}" for i in seq]}) + "\n"
            )
    return items, sequences


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> tuple[Path, Path]:
    return write_tiny_dataset(tmp_path / "data")
