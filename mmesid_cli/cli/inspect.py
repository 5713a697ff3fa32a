"""``mmesid inspect FILE``: what an artifact holds."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from mmesid_cli.cli.console import out


def inspect_file(
    path: Path = typer.Argument(
        ..., help="An embeddings.h5, sids.h5, *.safetensors, JSON report or JSONL file."
    ),
) -> None:
    """Print what an mmesid file holds: format, items, tables and their shapes, config."""
    from mmesid_cli.artifacts.inspection import describe

    title, rows, extra = describe(path)
    table = Table(title=title)
    table.add_column("entry")
    table.add_column("value")
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)
    if extra:
        out.print_json(json.dumps(extra))


def register(app: typer.Typer) -> None:
    app.command("inspect", short_help="What an mmesid file or run folder holds.")(inspect_file)
