"""A writer killed mid-write leaves the previous file intact and nothing under the final name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from mmesid_cli.artifacts.embeddings import (
    Embeddings,
    EmbeddingTable,
    read_embeddings,
    write_embeddings,
)

# The child writes a new embeddings file through the real writer, but stops forever right
# after the item ids are in the temporary file: a deterministic "mid-write" for SIGKILL.
CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from mmesid_cli.artifacts import embeddings as emb

    real = emb.write_item_ids
    def stall(handle, ids):
        real(handle, ids)
        handle.flush()
        print("mid-write", flush=True)
        time.sleep(600)
    emb.write_item_ids = stall
    table = emb.EmbeddingTable(values=np.zeros((3, 2), np.float32))
    emb.write_embeddings(sys.argv[1], emb.Embeddings(item_ids=["p", "q", "r"], tables={"new": table}))
    """
)


def test_killed_writer_leaves_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "embeddings.h5"
    old = np.arange(8, dtype=np.float32).reshape(4, 2)
    write_embeddings(path, Embeddings(["a", "b", "c", "d"], {"old": EmbeddingTable(old)}))
    before = path.read_bytes()

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "mid-write"
        partial = list(tmp_path.glob(".embeddings.h5.*.partial"))
        assert len(partial) == 1 and partial[0].stat().st_size > 0  # the child really was writing
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    assert path.read_bytes() == before
    back = read_embeddings(path)
    assert back.item_ids == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(back.tables["old"].values, old)


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    from mmesid_cli.artifacts.atomic import write_text_atomic

    umask = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "r.json", "{}")
    finally:
        os.umask(umask)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
