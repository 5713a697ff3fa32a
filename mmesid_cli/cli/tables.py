"""Tables whose title names a file: the title goes on its own line, never folded mid-path."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text


def print_titled(console: Console, title: str, table: Table) -> None:
    """Print ``title`` as one line, then ``table``.

    rich folds a table's title to the table's width, so a path breaks anywhere
    ("sasrec.safeten" / "sors"); a title printed on its own line with soft wrapping is left
    whole for the terminal to wrap, and stays one line in a log.
    """
    console.print(Text(title, style="bold"), soft_wrap=True)
    console.print(table)
