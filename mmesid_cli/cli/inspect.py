"""``mmesid inspect FILE``: what an artifact holds."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from mmesid_cli.cli.console import out
from mmesid_cli.cli.tables import print_titled


def inspect_file(
    path: Path = typer.Argument(
        ...,
        help="An embeddings.h5, sids.h5, *.safetensors, JSON report or JSONL file, or a "
        "`mmesid finetune` run folder.",
    ),
) -> None:
    """Print what an mmesid file or run folder holds.

    A file: its format, items, tables and their shapes, config. A run folder: backbone,
    modalities, objective, steps, best validation and its files. A JSON report: its
    settings and its figures as tables.
    """
    from mmesid_cli.artifacts.inspection import describe

    description = describe(path)
    table = Table()
    table.add_column("entry")
    table.add_column("value", overflow="fold")
    for key, value in description.rows:
        table.add_row(key, value)
    print_titled(out, description.title, table)
    for figures in description.tables:
        shown = Table()
        for column in figures.header:
            shown.add_column(column, overflow="fold")
        for row in figures.rows:
            shown.add_row(*row)
        print_titled(out, figures.title, shown)
    if description.config:
        out.print_json(json.dumps(description.config))


def register(app: typer.Typer) -> None:
    app.command("inspect", short_help="What an mmesid file or run folder holds.")(inspect_file)
