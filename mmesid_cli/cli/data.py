"""``mmesid data …``: import public data sets into items.jsonl + sequences.jsonl; statistics."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from mmesid_cli.cli.console import console, out
from mmesid_cli.cli.tables import print_titled
from mmesid_cli.data import importers
from mmesid_cli.data.records import read_items, read_sequences
from mmesid_cli.data.stats import dataset_stats

data_app = typer.Typer(
    help="Import public data sets into items.jsonl + sequences.jsonl, and describe them.",
    no_args_is_help=True,
)

OUT_OPTION = typer.Option(
    ..., "-o", "--out", help="Folder to write items.jsonl and sequences.jsonl into."
)
MIN_OPTION = typer.Option(
    0,
    "--min-interactions",
    min=0,
    help="k-core filter: repeatedly drop users and items with fewer interactions (0 = keep all).",
)


def _check_out(out_dir: Path) -> None:
    """-o must be a folder we can write items.jsonl and sequences.jsonl into (before reading)."""
    from mmesid_cli.artifacts.atomic import check_output, check_outputs

    check_output(out_dir, folder=True)
    check_outputs(out_dir / "items.jsonl", out_dir / "sequences.jsonl")


def _finish(imported: importers.Imported, out_dir: Path, min_interactions: int) -> None:
    imported = importers.k_core(imported, min_interactions)
    importers.check_usable(imported, min_interactions)
    items_path, seq_path = imported.write(out_dir)
    n_inter = sum(len(s) for _, s, _ in imported.sequences)
    console.print(
        f"wrote {items_path} ({len(imported.items):,} items) and {seq_path} "
        f"({len(imported.sequences):,} users, {n_inter:,} interactions) from {imported.source}"
    )


@data_app.command("import-amazon", short_help="Amazon reviews (E4SRec/MME-SID or P5 layout).")
def import_amazon(
    path: Path = typer.Argument(
        ...,
        help="A raw folder (MME-SID: <name>.txt [+ CSV]; P5: sequential_data.txt + datamaps.json) or a sequence .txt file.",
    ),
    out_dir: Path = OUT_OPTION,
    text_csv: Path | None = typer.Option(
        None,
        "--text-csv",
        help="CSV asin,title,imUrl,id naming each 1-based item id (MME-SID layout).",
    ),
    datamaps: Path | None = typer.Option(
        None, "--datamaps", help="P5 / S3-Rec datamaps.json (id2user, id2item)."
    ),
    min_interactions: int = MIN_OPTION,
) -> None:
    """Import Amazon review data in the MME-SID / E4SRec or the P5 / S3-Rec layout.

    Lines are `<user> <item> <item> ...` with 1-based item ids, already chronological.
    Where to get the data: docs/data.md.

    Example:

    \b
      mmesid data import-amazon Beauty/ -o data/beauty
    """
    _check_out(out_dir)
    _finish(
        importers.import_amazon(path, text_csv=text_csv, datamaps=datamaps),
        out_dir,
        min_interactions,
    )


@data_app.command("import-movielens", short_help="MovieLens ml-100k or ml-1m.")
def import_movielens(
    folder: Path = typer.Argument(
        ..., help="An ml-100k folder (u.data, u.item) or an ml-1m folder (ratings.dat, movies.dat)."
    ),
    out_dir: Path = OUT_OPTION,
    min_interactions: int = MIN_OPTION,
) -> None:
    """Import MovieLens; each user's items are ordered by timestamp (ties keep file order)."""
    _check_out(out_dir)
    _finish(importers.import_movielens(folder), out_dir, min_interactions)


@data_app.command("import-recbole", short_help="RecBole atomic files (.inter, .item).")
def import_recbole(
    path: Path = typer.Argument(
        ...,
        help="A RecBole atomic-file folder or its .inter file (a .item beside it gives titles).",
    ),
    out_dir: Path = OUT_OPTION,
    min_interactions: int = MIN_OPTION,
) -> None:
    """Import RecBole atomic files (.inter, .item); items ordered by timestamp per user."""
    _check_out(out_dir)
    _finish(importers.import_recbole(path), out_dir, min_interactions)


@data_app.command("stats", short_help="Counts, lengths and split sizes of a data set.")
def stats(
    items: Path = typer.Argument(..., help="items.jsonl"),
    sequences: Path = typer.Argument(..., help="sequences.jsonl"),
    json_out: Path | None = typer.Option(
        None, "--json", help="Also write the figures as a JSON report."
    ),
) -> None:
    """Users, items, interactions, sequence lengths, items without text, and split sizes."""
    from mmesid_cli.artifacts.atomic import check_outputs

    check_outputs(json_out, inputs=(items, sequences))
    item_table = read_items(items)
    figures = dataset_stats(item_table, read_sequences(sequences, item_table))
    table = Table(show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                table.add_row(f"{key}.{sub}", _fmt(v))
        else:
            table.add_row(key, _fmt(value))
    print_titled(out, str(sequences), table)
    if json_out is not None:
        from mmesid_cli.artifacts.reports import write_report

        write_report(
            json_out,
            "data-stats",
            {"items_file": str(items), "sequences_file": str(sequences), "stats": figures},
        )


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if value < 1 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return json.dumps(value)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data", short_help="Import public data sets; describe them.")
