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


def _dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path: Path) -> None:
    from mmesid_cli.artifacts.atomic import write_text_atomic

    dead, live = _dead_pid(), os.getppid()  # our parent outlives this test
    stale = tmp_path / f".r.json.{dead}.abc123.partial"
    stale_dir = tmp_path / f".r.json.{dead}.def456.partial"
    older = tmp_path / ".r.json.k2j3h4g5.partial"  # an older mmesid's name: no process id
    running = tmp_path / f".r.json.{live}.xyz789.partial"  # a live writer's: kept
    other = tmp_path / f".r.json.old.{dead}.abc123.partial"  # another target's: kept
    for path in (stale, older, running, other):
        path.write_text("half")
    stale_dir.mkdir()
    (stale_dir / "adapter_model.safetensors").write_text("half")

    write_text_atomic(tmp_path / "r.json", "{}")

    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["r.json", running.name, other.name])


def test_committed_together_is_all_or_nothing(tmp_path: Path) -> None:
    import pytest

    from mmesid_cli.artifacts.atomic import committed_together, write_text_atomic

    write_text_atomic(tmp_path / "a", "old a")
    write_text_atomic(tmp_path / "b", "old b")
    with pytest.raises(RuntimeError), committed_together():
        write_text_atomic(tmp_path / "a", "new a")
        assert (tmp_path / "a").read_text() == "old a"  # nothing visible inside the block
        raise RuntimeError("the second file could not be made")
    assert [(tmp_path / n).read_text() for n in "ab"] == ["old a", "old b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]

    with committed_together():
        write_text_atomic(tmp_path / "a", "new a")
        write_text_atomic(tmp_path / "sub" / "b", "new b")  # another folder of the set
        assert (tmp_path / "a").read_text() == "old a"
    assert (tmp_path / "a").read_text() == "new a"
    assert (tmp_path / "sub" / "b").read_text() == "new b"
    assert not list(tmp_path.rglob("*.partial"))


def test_outputs_are_checked_before_any_work(tmp_path: Path) -> None:
    import pytest

    from mmesid_cli.artifacts.atomic import check_output, check_outputs
    from mmesid_cli.errors import UserError

    check_output(tmp_path / "new" / "deeper" / "r.json")  # missing folders are made later
    check_output(tmp_path, folder=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a folder"):
        check_output(tmp_path)
    with pytest.raises(UserError, match="exists and is not a folder"):
        check_output(tmp_path / "file", folder=True)
    with pytest.raises(
        UserError, match=r"file/deeper/r.json: cannot be written: .*file is not a folder"
    ):
        check_output(tmp_path / "file" / "deeper" / "r.json")
    with pytest.raises(UserError, match="two outputs"):
        check_outputs(tmp_path / "x.h5", None, tmp_path / "." / "x.h5")


def test_unwritable_place_is_a_user_error(tmp_path: Path) -> None:
    import pytest

    from mmesid_cli.artifacts.atomic import write_text_atomic
    from mmesid_cli.errors import UserError

    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot write"):
        write_text_atomic(tmp_path / "file" / "r.json", "{}")


def test_safetensors_and_staging_folders_get_the_usual_modes(tmp_path: Path) -> None:
    import torch

    from mmesid_cli.artifacts.atomic import staging_folder
    from mmesid_cli.artifacts.weights import write_weights

    umask = os.umask(0o022)
    try:
        write_weights(tmp_path / "w.safetensors", {"a": torch.zeros(2)}, kind="x", config={})
        folder = staging_folder(tmp_path / "checkpoint")
    finally:
        os.umask(umask)
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o644
    assert folder.stat().st_mode & 0o777 == 0o755
    assert folder.name.startswith(f".checkpoint.{os.getpid()}.") and folder.name.endswith(
        ".partial"
    )


def test_a_folder_that_refuses_a_write_is_not_writable(tmp_path: Path, monkeypatch) -> None:
    """The check writes (a nameless probe) rather than asking access(), which root passes."""
    import errno
    import tempfile

    import pytest

    from mmesid_cli.artifacts.atomic import check_output
    from mmesid_cli.errors import UserError

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with pytest.raises(UserError, match=r"r.json: cannot be written: .* not writable \(Read-only"):
        check_output(tmp_path / "r.json")
    assert not any(tmp_path.iterdir())
