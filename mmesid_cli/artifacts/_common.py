"""What every artifact reader shares: the file must exist and carry our format tag."""

from __future__ import annotations

import os
from pathlib import Path

from mmesid_cli.errors import UserError


def existing_file(path: str | os.PathLike[str], what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} not found", path=path)
    if not path.is_file():
        raise UserError(f"{what} is not a regular file", path=path)
    if path.stat().st_size == 0:
        raise UserError(f"{what} is empty", path=path)
    return path


def check_format(path: Path, found: object, expected: str, version: object, supported: int) -> None:
    if found != expected:
        shown = "no format tag" if found is None else f"format {found!r}"
        raise UserError(f"expected a {expected} file, found {shown}", path=path)
    try:
        number = int(version)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserError(f"{expected}: unreadable format_version {version!r}", path=path) from None
    if number > supported:
        raise UserError(
            f"{expected} format_version {number} is newer than this mmesid reads ({supported}); "
            "upgrade mmesid",
            path=path,
        )
