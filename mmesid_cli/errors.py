"""The one user-error type of mmesid.

A :class:`UserError` is a problem the user can fix (a malformed file, an unknown item, a
bad option). The CLI maps it to exit code 2 and a one-line message in one place
(``mmesid_cli.cli.main``); every other exception is a runtime failure (exit code 1).
"""

from __future__ import annotations

from os import PathLike


class UserError(Exception):
    """A bad input, reported as ``<file>:<line>: <what is wrong>`` with exit code 2."""

    def __init__(
        self, message: str, *, path: str | PathLike[str] | None = None, line: int | None = None
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
            where += ": "
        return where + self.message
