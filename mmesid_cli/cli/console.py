"""Shared terminal output: one rich console on stderr for progress and tables."""

from __future__ import annotations

import threading
import time
from datetime import datetime

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mmesid_cli import progress as library

console = Console(stderr=True)
out = Console()  # tables and figures a user may pipe


class Bar(Progress, library.Progress):
    """rich bars with ETA in a terminal; timestamped lines in a log (stderr not a terminal).

    Also a :class:`mmesid_cli.progress.Progress`, so it can be handed to the library. In a
    log, a background thread writes one line per unfinished task whenever nothing has been
    written for ``interval`` seconds, so a step that advances rarely (one long batch) still
    shows it is alive; each finished task gets a last line when the bar stops.
    """

    def __init__(self, console: Console = console, interval: float = 20.0) -> None:
        super().__init__(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=not console.is_terminal,
            # Steps of a minute (a fine-tuning step, a tokeniser epoch) still get an ETA.
            speed_estimate_period=300.0,
        )
        self.interval = interval
        self._last_line = time.monotonic()
        self._stopping = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._reported: dict[TaskID, float] = {}  # completed at a task's last line

    # --- mmesid_cli.progress.Progress -----------------------------------------------------
    def task(self, description: str, total: float | None = None) -> library.Task:
        return _BarTask(self, self.add_task(description, total=total))

    def note(self, message: str) -> None:
        self._line(message)

    # --- log mode ---------------------------------------------------------------------------
    def start(self) -> None:
        super().start()
        if self.disable and self._heartbeat is None:
            self._last_line = time.monotonic()
            self._stopping.clear()
            self._heartbeat = threading.Thread(target=self._beat, daemon=True)
            self._heartbeat.start()

    def stop(self) -> None:
        if self._heartbeat is not None:
            self._stopping.set()
            self._heartbeat.join()
            self._heartbeat = None
            for task in self.tasks:  # the figures a task ended at, once
                if task.visible and task.completed not in (0, self._reported.get(task.id)):
                    self._line(self.status(task))
        super().stop()

    def _beat(self) -> None:
        while not self._stopping.wait(1.0):
            if time.monotonic() - self._last_line >= self.interval:
                busy = [t for t in self.tasks if t.visible and not t.finished]
                for task in busy:
                    self._line(self.status(task))
                if not busy:
                    self._last_line = time.monotonic()

    def _line(self, message: str) -> None:
        self._last_line = time.monotonic()
        if self.disable:
            stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
            self.console.print(f"{stamp} {message}", markup=False, highlight=False, soft_wrap=True)
        else:
            self.console.print(message, highlight=False)

    def status(self, task) -> str:
        """One line: ``description: done/total (pct), elapsed, ETA``."""
        self._reported[task.id] = task.completed
        done = f"{task.completed:,.0f}"
        if task.total:
            done += f"/{task.total:,.0f} ({100 * task.completed / task.total:.0f}%)"
        line = f"{task.description.strip()}: {done}, {_clock(task.elapsed)} elapsed"
        if task.finished:
            return line + ", done"
        remaining = task.time_remaining
        if remaining is None and task.total and task.completed and task.elapsed:
            # One sample so far: the mean rate since the task (re)started.
            remaining = task.elapsed * (task.total - task.completed) / task.completed
        return line + (f", ETA {_clock(remaining)}" if remaining is not None else "")


class _BarTask(library.Task):
    def __init__(self, bar: Bar, task_id: TaskID) -> None:
        self.bar, self.id = bar, task_id

    def advance(self, n: float = 1) -> None:
        self.bar.advance(self.id, n)

    def update(self, *, completed=None, total=None, description=None) -> None:
        changes = {"completed": completed, "total": total, "description": description}
        changes = {k: v for k, v in changes.items() if v is not None}
        if completed is not None and completed < self.bar._tasks[self.id].completed:
            # Going back (the next epoch): restart the clock and the speed estimate too.
            self.bar.reset(self.id, **changes)
        else:
            self.bar.update(self.id, **changes)

    def close(self) -> None:
        task = self.bar._tasks.get(self.id)
        if task is None:
            return
        if self.bar.disable and task.completed not in (0, self.bar._reported.get(self.id)):
            self.bar._line(self.bar.status(task))
        self.bar.remove_task(self.id)


def _clock(seconds: float | None) -> str:
    seconds = int(seconds or 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress(interval: float = 20.0) -> Bar:
    """Progress for long steps: a bar with ETA in a terminal, a timestamped line at least
    every ``interval`` seconds (and at the end) when stderr is a log."""
    return Bar(console, interval)


# Columns of report sections that hold text (left-aligned); every other column is a figure.
TEXT_COLUMNS = ("model", "split", "space", "modality", "matrix", "protocol", "run", "objective")


def print_section(section) -> None:
    """A :class:`mmesid_cli.report.Section` as a rich table on stdout, then its notes."""
    from rich.table import Table

    table = Table(title=section.title)
    for column in section.header:
        justify = "left" if column in TEXT_COLUMNS else "right"
        table.add_column(column, justify=justify, overflow="fold")
    for row in section.rows:
        table.add_row(*row)
    out.print(table)
    for note in section.notes:
        out.print(f"  {note}", soft_wrap=True)
