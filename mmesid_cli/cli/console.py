"""Shared terminal output: one rich console on stderr for progress and tables."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
out = Console()  # tables and figures a user may pipe


def progress() -> Progress:
    """A progress bar that hides itself when stderr is not a terminal."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    )


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
