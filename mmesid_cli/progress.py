"""Progress of long steps, reported by the library without knowing how it is shown.

A long library function takes ``progress: Progress | None``. It opens one :class:`Task` per
measured piece of work (``progress.task("SASRec epoch 3", total=n_users)``), advances it as
units are done, and writes one-line summaries with ``progress.note(...)`` (an epoch's loss,
a safety cap that fired). The base class does nothing, so a library user who passes nothing
pays nothing; the CLI passes one drawn with rich (a bar with ETA in a terminal, timestamped
lines in a log: :func:`mmesid_cli.cli.console.progress`).

A :class:`Task` is also a ``Callable[[int], None]`` (calling it advances it), the form of
the ``progress`` callbacks of :func:`mmesid_cli.metrics.rank_targets` and
:func:`mmesid_cli.analysis.concordance.concordance`, so a task can be handed to them as is.
"""

from __future__ import annotations


class Task:
    """One piece of work with a known (or unknown) total; this base ignores every call."""

    def advance(self, n: float = 1) -> None:
        """``n`` more units are done."""

    def update(
        self,
        *,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
    ) -> None:
        """Set what is done, the total or the description (``None`` leaves it as it is)."""

    def close(self) -> None:
        """The work is over: a display may drop the task (a log gets its last line)."""

    def __call__(self, n: float = 1) -> None:
        self.advance(n)


class Progress:
    """Where long steps report; this base shows nothing (the default of library calls)."""

    def task(self, description: str, total: float | None = None) -> Task:
        """A new task (a bar in a terminal, a line every few seconds in a log)."""
        return Task()

    def note(self, message: str) -> None:
        """A line for the user: an epoch's figures, a cap that stopped the work."""


NO_PROGRESS = Progress()


def or_quiet(progress: Progress | None) -> Progress:
    """``progress``, or the silent one when a caller passed ``None``."""
    return NO_PROGRESS if progress is None else progress
