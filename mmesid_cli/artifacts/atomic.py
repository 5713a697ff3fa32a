"""Atomic file writes: a temporary file in the destination folder, then one rename.

An interrupted run (an exception, a kill, a power cut after the rename is durable) never
leaves a half-written file under the final name, so a Makefile never takes a broken
artifact for a finished one, and a previous file of that name stays intact until the new
one is complete.

Temporary files are named ``.NAME.<pid>.<random>.partial``: the next write of ``NAME``
removes those whose process is gone (a killed run), never those of a live writer.
Files that belong together (a tokeniser and the SIDs it made) are written inside
:func:`committed_together`: all are complete and synced before the first is renamed, and
the renames follow one another at once. A kill in the microseconds between two renames
leaves a mixed set; the files record each other's digests, so readers refuse it.
Outputs are checked with :func:`check_output` before any work, so a run that could not
write its result fails in its first second, not after training.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mmesid_cli.errors import UserError

# Errors of the place a user asked us to write to, not of mmesid: they exit 2, naming it.
_PLACE_ERRORS = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EISDIR,
    errno.ENOTDIR,
    errno.ENOENT,
    errno.EEXIST,
    errno.ENAMETOOLONG,
}

# The temporaries of the files being written by an open committed_together() block.
_GROUP: contextvars.ContextVar[dict[Path, Path] | None] = contextvars.ContextVar(
    "mmesid_commit_group", default=None
)


def _umask() -> int:
    """The process umask, read without setting it where Linux says it (threads may write)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def normal_mode(path: Path) -> None:
    """The mode a plain open() or mkdir() would give (mkstemp/mkdtemp make them private)."""
    base = 0o777 if path.is_dir() else 0o666
    os.chmod(path, base & ~_umask())


def cannot_write(final: Path, exc: OSError) -> UserError:
    reason = exc.strerror or str(exc)
    where = f" ({exc.filename})" if exc.filename and Path(exc.filename) != final else ""
    return UserError(f"cannot write: {reason}{where}", path=final)


def check_output(path: str | os.PathLike[str], *, folder: bool = False) -> Path:
    """Fail now (exit 2) unless ``path`` can be written: a file (or, with ``folder``, a
    folder) that is absent or of that kind, below a writable folder (missing folders
    between are created at write time)."""
    path = Path(path)
    if path.is_dir() and not folder:
        raise UserError("is a folder; give a file name", path=path)
    if path.exists() and folder and not path.is_dir():
        raise UserError("exists and is not a folder", path=path)
    ancestor = path if path.is_dir() else path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"cannot be written: {ancestor} is not a folder", path=path)
    # A real write, not os.access: root passes access() on a read-only mount or in /proc.
    # The probe has no name (O_TMPFILE) or is removed at once.
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UserError(
            f"cannot be written: the folder {ancestor} is not writable ({reason})", path=path
        ) from None
    return path


def check_outputs(
    *paths: str | os.PathLike[str] | None,
    inputs: tuple[str | os.PathLike[str] | None, ...] = (),
) -> None:
    """:func:`check_output` for each file path given (``None``: an output not asked for);
    no two outputs may be one file, nor an output one of the command's ``inputs``."""
    read = {Path(p).resolve() for p in inputs if p is not None}
    seen: dict[Path, str] = {}
    for path in paths:
        if path is None:
            continue
        resolved = Path(path).resolve()
        if resolved in seen:
            raise UserError(f"is given for two outputs (also as {seen[resolved]})", path=path)
        if resolved in read:
            raise UserError("is an input of this command: write the output elsewhere", path=path)
        seen[resolved] = str(path)
        check_output(path)


_OWNER = re.compile(r"^(?:(\d+)\.)?[A-Za-z0-9_]+\.partial$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_partials(final: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries of ``final`` that a killed writer left; return them.

    A temporary of a live process (another writer, or this one) is kept; one without a
    process id (written by an older mmesid) is stale.
    """
    final = Path(final)
    removed: list[Path] = []
    if not final.parent.is_dir():
        return removed
    prefix = f".{final.name}."
    for entry in final.parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        match = _OWNER.match(entry.name[len(prefix) :])
        if match is None:
            continue
        pid = match.group(1)
        if pid is not None and (int(pid) == os.getpid() or _alive(int(pid))):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system can fsync a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success it replaces ``final`` atomically.

    The caller writes the whole file to the yielded path. On an exception the temporary
    file is removed and ``final`` is untouched. Inside :func:`committed_together` the
    rename waits for the end of the block. An unwritable place is a :class:`UserError`.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(final)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{final.name}.{os.getpid()}.", suffix=".partial", dir=final.parent
        )
        os.close(fd)
    except OSError as exc:
        if exc.errno in _PLACE_ERRORS:
            raise cannot_write(final, exc) from None
        raise
    tmp = Path(tmp_name)
    group = _GROUP.get()
    try:
        yield tmp
        normal_mode(tmp)  # a writer may have replaced the file (safetensors makes it 0600)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        if group is not None:
            earlier = group.pop(final, None)
            if earlier is not None:
                earlier.unlink(missing_ok=True)
            group[final] = tmp
            return
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in _PLACE_ERRORS:
            raise cannot_write(final, exc) from None
        raise


def staging_folder(final: str | os.PathLike[str]) -> Path:
    """A new empty folder beside ``final`` (``.NAME.<pid>.<random>.partial``, normal mode)
    to build a folder in and rename over ``final``; stale ones of killed runs are removed."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(final)
        staging = Path(
            tempfile.mkdtemp(
                prefix=f".{final.name}.{os.getpid()}.", suffix=".partial", dir=final.parent
            )
        )
    except OSError as exc:
        if exc.errno in _PLACE_ERRORS:
            raise cannot_write(final, exc) from None
        raise
    normal_mode(staging)
    return staging


@contextlib.contextmanager
def committed_together() -> Iterator[None]:
    """Files written with :func:`atomic_path` in this block become visible together.

    Each file is written and synced under its temporary name; only when the whole block
    has succeeded are they renamed, one right after another (in the order written). A
    failure or a kill before that leaves every earlier file as it was; readers of files
    that belong together also check the digests they record of each other.
    """
    if _GROUP.get() is not None:  # nested: the outer block commits
        yield
        return
    pending: dict[Path, Path] = {}
    token = _GROUP.set(pending)
    try:
        yield
    except BaseException:
        for tmp in pending.values():
            tmp.unlink(missing_ok=True)
        raise
    finally:
        _GROUP.reset(token)
    for final, tmp in pending.items():
        os.replace(tmp, final)
    for folder in {final.parent for final in pending}:
        _fsync_dir(folder)


def write_bytes_atomic(final: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(final: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(final, text.encode("utf-8"))
