"""``mmesid embed``: item embeddings per modality (text, image, collab, or imported) into one file.

Everything is checked before any work or any write: the items file, an existing output
file's item ids, the template, the model paths, the images, the sequences, an imported
matrix. The tables are then computed, and written at the end in one atomic write (plus, for
collab, the SASRec checkpoint and its report), so a failure leaves every file as it was.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict
from pathlib import Path

import typer
from rich.table import Table

from mmesid_cli.artifacts.atomic import check_outputs, committed_together
from mmesid_cli.cli.console import console, out, progress
from mmesid_cli.cli.options import SEED_MAX, positive, threads_option
from mmesid_cli.cli.tables import print_titled
from mmesid_cli.errors import UserError
from mmesid_cli.threads import use_threads

BUILT_IN = ("text", "image", "collab")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _check_modalities(modalities: list[str], imported: Path | None) -> list[str]:
    if not modalities:
        raise UserError("give at least one --modality (text, image or collab)")
    if len(set(modalities)) != len(modalities):
        raise UserError(f"--modality repeated: {', '.join(modalities)}")
    if imported is not None:
        if len(modalities) != 1:
            raise UserError("--import fills exactly one --modality (the table's name)")
        if not _NAME.match(modalities[0]):
            raise UserError(f"--modality {modalities[0]!r}: use letters, digits, '_', '-', '.'")
        return modalities
    unknown = [m for m in modalities if m not in BUILT_IN]
    if unknown:
        raise UserError(
            f"unknown --modality {unknown[0]!r} (expected text, image or collab; "
            "use --import FILE to bring any other table)"
        )
    return modalities


def embed(
    items: Path = typer.Argument(..., help="items.jsonl (item_id, title, image, …)."),
    modality: list[str] = typer.Option(
        [],
        "--modality",
        "-m",
        help="text, image or collab; repeat for several. With --import: the table's name.",
    ),
    out_path: Path = typer.Option(
        ...,
        "-o",
        "--out",
        help="embeddings.h5 to create, or to add to (its other tables are kept).",
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help="text: a sentence-transformers folder or hub name (default: the bundled all-MiniLM-L6-v2). image: a CLIP-style checkpoint folder (required).",
    ),
    template: str = typer.Option(
        "{title}",
        "--template",
        help="text: Python format string over item fields, e.g. '{title}. {description}'.",
    ),
    batch_size: int = typer.Option(
        64, "--batch-size", min=1, help="text / image: items per forward pass."
    ),
    normalize: bool = typer.Option(
        False, "--normalize", help="text / image: scale every row to unit L2 norm."
    ),
    require_all: bool = typer.Option(
        False,
        "--require-all",
        help="image: fail when an item has no image instead of writing a zero row.",
    ),
    device: str = typer.Option(
        "auto", "--device", help="auto (CUDA when present), cpu, cuda or cuda:N."
    ),
    threads: int | None = threads_option(),
    sequences: Path | None = typer.Option(
        None,
        "--sequences",
        help="collab: sequences.jsonl; SASRec trains on items[:-2] of each user.",
    ),
    loss: str = typer.Option(
        "ce",
        "--loss",
        help="collab: ce (full softmax) or bce (one sampled negative, the 2018 paper).",
    ),
    max_epochs: int = typer.Option(
        200, "--max-epochs", min=1, help="collab: upper bound on training epochs."
    ),
    patience: int = typer.Option(
        5,
        "--patience",
        min=1,
        help="collab: validation evaluations without a better NDCG@10 before stopping.",
    ),
    eval_every: int = typer.Option(
        2, "--eval-every", min=1, help="collab: epochs between validation evaluations."
    ),
    max_minutes: float | None = typer.Option(
        None,
        "--max-minutes",
        callback=positive,
        help="collab: safety cap; if it fires, the report says stopped_by: time_cap.",
    ),
    lr: float = typer.Option(1e-3, "--lr", callback=positive, help="collab: Adam learning rate."),
    train_batch_size: int = typer.Option(
        128, "--train-batch-size", min=1, help="collab: users per training step."
    ),
    dim: int = typer.Option(64, "--dim", min=1, help="collab: embedding size."),
    blocks: int = typer.Option(2, "--blocks", min=1, help="collab: self-attention blocks."),
    heads: int = typer.Option(1, "--heads", min=1, help="collab: attention heads."),
    max_len: int = typer.Option(
        50, "--max-len", min=1, help="collab: most recent items a user is represented by."
    ),
    dropout: float = typer.Option(0.5, "--dropout", min=0.0, max=1.0, help="collab: dropout rate."),
    seed: int = typer.Option(
        0,
        "--seed",
        min=0,
        max=SEED_MAX,
        help="collab: random seed (same seed, device and threads: same result).",
    ),
    checkpoint: Path | None = typer.Option(
        None,
        "--checkpoint",
        help="collab: where to write the SASRec weights (default: sasrec.safetensors beside --out).",
    ),
    report: Path | None = typer.Option(
        None,
        "--report",
        help="collab: where to write SASRec's validation/test report (default: sasrec_report.json beside --out).",
    ),
    import_path: Path | None = typer.Option(
        None,
        "--import",
        help="Import a .npy / .pt / .pkl matrix (one row per item) as the --modality table.",
    ),
    id_order: str = typer.Option(
        "items",
        "--id-order",
        help="--import: 'items' (rows follow items.jsonl) or a file of item ids, one per line, in row order.",
    ),
    drop_first_row: bool = typer.Option(
        False,
        "--drop-first-row",
        help="--import: drop row 0 first (a padding row, as in the reference SASRec table).",
    ),
) -> None:
    """Embed every item under one or more modalities into an embeddings.h5 file.

    text: a sentence-transformers model over --template (default '{title}').\n
    image: a CLIP-style model over each item's local image (zero row, present=False, without one).\n
    collab: SASRec on the training part of --sequences, early-stopped on validation NDCG@10;
    also writes its checkpoint and a validation/test report.\n
    --import: any .npy / .pt / .pkl matrix with a row per item, as the --modality table.

    Examples:

    \b
      mmesid embed items.jsonl -m text -m collab --sequences seq.jsonl -o emb.h5
      mmesid embed items.jsonl -m image --model clip-folder/ -o emb.h5
      mmesid embed items.jsonl -m collab --import table.pkl --drop-first-row \\
          -o emb.h5

    Guide: docs/cli.md (embed).
    """

    from mmesid_cli.artifacts.embeddings import EmbeddingTable, add_tables, check_item_ids
    from mmesid_cli.data.records import read_items
    from mmesid_cli.encoders import file_sha256, resolve_device

    wanted = _check_modalities(modality, import_path)
    trains_collab = "collab" in wanted and import_path is None
    if trains_collab:
        checkpoint = checkpoint or out_path.with_name("sasrec.safetensors")
        report = report or out_path.with_name("sasrec_report.json")
    # Every output can be written: a run that could not save fails now, not after training.
    check_outputs(out_path, *((checkpoint, report) if trains_collab else ()))
    threads = use_threads(threads)
    resolve_device(device)  # an unknown device fails now, not after an hour
    item_table = read_items(items)
    ids = item_table.ids
    check_item_ids(out_path, ids)
    if model is not None and {"text", "image"} <= set(wanted):
        raise UserError("--model is ambiguous with both text and image: embed them in two commands")
    provenance = {"source": str(items), "source_sha256": file_sha256(items)}

    # 1. Check every input before any long work.
    plans: dict[str, object] = {}
    tables: dict[str, EmbeddingTable] = {}
    if import_path is not None:
        from mmesid_cli.encoders.imported import import_embeddings

        values, attrs = import_embeddings(import_path, item_table, id_order, drop_first_row)
        tables[wanted[0]] = EmbeddingTable(values=values, attrs={**attrs, **provenance})
        wanted = []
    if "text" in wanted:
        from mmesid_cli.encoders.text import TextEncoderConfig, render_texts, resolve_model

        resolve_model(model)
        plans["text"] = render_texts(item_table, template)
    if "image" in wanted:
        from mmesid_cli.encoders.image import ImageEncoderConfig, find_images

        if model is None:
            raise UserError("the image modality needs --model (a CLIP-style checkpoint folder)")
        plans["image"] = find_images(item_table, require_all=require_all)
    if "collab" in wanted:
        from mmesid_cli.data.records import read_sequences
        from mmesid_cli.encoders.collab import SASRecTrainConfig, training_sequences
        from mmesid_cli.encoders.sasrec import SASRecConfig

        if sequences is None:
            raise UserError("the collab modality needs --sequences sequences.jsonl")
        if loss not in ("ce", "bce"):
            raise UserError(f"--loss must be ce or bce, not {loss!r}")
        if dim % heads:
            raise UserError(f"--dim {dim} must be divisible by --heads {heads}")
        seq_table = read_sequences(sequences, item_table)
        if not training_sequences(seq_table, max_len):
            raise UserError(
                "no user has the 4 items SASRec needs (2 to train on, a validation and a test target)",
                path=sequences,
            )
        model_config = SASRecConfig(
            n_items=len(item_table),
            dim=dim,
            n_blocks=blocks,
            n_heads=heads,
            max_len=max_len,
            dropout=dropout,
        )
        train_config = SASRecTrainConfig(
            loss=loss,  # type: ignore[arg-type]
            lr=lr,
            batch_size=train_batch_size,
            max_epochs=max_epochs,
            patience=patience,
            eval_every=eval_every,
            max_minutes=max_minutes,
            seed=seed,
            device=device,
        )
        checkpoint = checkpoint or out_path.with_name("sasrec.safetensors")
        report = report or out_path.with_name("sasrec_report.json")
        plans["collab"] = (seq_table, model_config, train_config)

    # 2. Compute (image before collab: an unreadable image fails before a long training).
    seconds: dict[str, float] = {}
    save_collab = None
    for name in [m for m in ("text", "image", "collab") if m in wanted]:
        start = time.perf_counter()
        if name == "text":
            config = TextEncoderConfig(model, template, batch_size, device, normalize)
            tables["text"] = _encode_text(plans["text"], config)
        elif name == "image":
            config = ImageEncoderConfig(model, batch_size, device, normalize, require_all)
            tables["image"] = _encode_image(item_table, plans["image"], config)
        else:
            tables["collab"], save_collab = _train_collab(
                plans["collab"], sequences, checkpoint, report, ids, provenance
            )
        seconds[name] = time.perf_counter() - start
        tables[name].attrs.update(provenance, seconds=round(seconds[name], 2))

    # 3. Write: the embeddings file in one atomic write, then SASRec's checkpoint and report.
    with committed_together():  # a kill never leaves a new table beside an old SASRec
        add_tables(out_path, ids, tables)
        if save_collab is not None:
            save_collab()
    summary = Table()
    for column in ("modality", "dim", "present", "seconds", "encoder"):
        summary.add_column(
            column, justify="right" if column in ("dim", "present", "seconds") else "left"
        )
    for name, table in tables.items():
        present = len(ids) if table.present is None else int(table.present.sum())
        took = f"{seconds[name]:.1f}" if name in seconds else "–"
        summary.add_row(
            name, str(table.dim), f"{present:,}", took, str(table.attrs.get("encoder", ""))
        )
    print_titled(out, f"{out_path}: {len(ids):,} items", summary)
    if "image" in tables and tables["image"].present is not None:
        missing = len(ids) - int(tables["image"].present.sum())
        if missing:
            console.print(
                f"image: {missing:,} items without an image got a zero row (present=False)"
            )


def _encode_text(texts, config):
    from mmesid_cli.artifacts.embeddings import EmbeddingTable
    from mmesid_cli.encoders.text import encode_texts

    with progress() as bar:
        task = bar.add_task("text", total=len(texts))
        values, attrs = encode_texts(texts, config, lambda n: bar.advance(task, n))
    return EmbeddingTable(values=values, attrs=attrs)


def _encode_image(item_table, files, config):
    from mmesid_cli.artifacts.embeddings import EmbeddingTable
    from mmesid_cli.encoders.image import encode_images

    with progress() as bar:
        task = bar.add_task("image", total=int(files.present.sum()))
        values, present, attrs = encode_images(
            item_table, files, config, lambda n: bar.advance(task, n)
        )
    return EmbeddingTable(values=values, present=present, attrs=attrs)


def _train_collab(plan, sequences_path, checkpoint, report_path, ids, provenance):
    """Train SASRec; return the collab table and a function that writes checkpoint + report."""
    import hashlib

    import numpy as np
    import torch

    from mmesid_cli.artifacts.embeddings import EmbeddingTable
    from mmesid_cli.artifacts.reports import environment, write_report
    from mmesid_cli.data.split import split_sizes
    from mmesid_cli.encoders import file_sha256
    from mmesid_cli.encoders.collab import EARLY_STOP_METRIC, train_sasrec
    from mmesid_cli.encoders.sasrec import save_sasrec
    from mmesid_cli.evaluation import PROTOCOL

    seq_table, model_config, train_config = plan
    with progress() as bar:
        result = train_sasrec(seq_table, model_config, train_config, progress=bar)
    _print_metrics(result.valid, result.test)
    if result.stopped_by == "time_cap":
        stopped = (
            f"[yellow]the --max-minutes {train_config.max_minutes:g} time cap[/] "
            "(a safety cap: this model depends on the machine's speed and load)"
        )
    elif result.stopped_by == "early_stopping":
        stopped = f"early stopping (patience {train_config.patience})"
    else:
        stopped = f"--max-epochs {train_config.max_epochs}"
    console.print(
        f"SASRec: best epoch {result.best_epoch} of {result.epochs_run}, stopped by {stopped}; "
        f"{result.train_seconds / 60:.1f} min"
    )
    settings = {"model": asdict(result.model.config), "training": asdict(train_config)}
    content = {
        "model": "SASRec",
        "valid": result.valid,
        "test": result.test,
        "protocol": PROTOCOL,
        "early_stopping": f"validation {EARLY_STOP_METRIC}; the test split is scored once, with the best validation weights",
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "stopped_by": result.stopped_by,
        "train_seconds": round(result.train_seconds, 1),
        "machine": {
            "device": str(next(result.model.parameters()).device),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            # Other jobs on the machine slow training down; say how busy it was.
            "load_average_1_5_15_min_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "settings": settings,
        "data": {
            **provenance,
            "sequences": str(sequences_path),
            "sequences_sha256": file_sha256(sequences_path),
            "split": split_sizes(seq_table),
            "train_sequences": result.n_train_sequences,
            "train_targets": result.n_train_targets,
        },
        "checkpoint": str(checkpoint),
        "log": result.log,
        "environment": environment(),
    }

    # The collab table is SASRec's item table: both files record its digest, so a table and
    # a checkpoint of two different trainings can be told apart.
    values = result.model.item_table.detach().cpu().numpy().copy()
    table_sha256 = hashlib.sha256(np.ascontiguousarray(values, dtype=np.float32).tobytes())
    content["item_table_sha256"] = table_sha256.hexdigest()

    def save() -> None:
        extra = {"training": asdict(train_config), "item_table_sha256": table_sha256.hexdigest()}
        save_sasrec(checkpoint, result.model, ids, extra=extra)
        write_report(report_path, "sasrec", content)
        console.print(f"wrote {checkpoint} and {report_path}")

    attrs = {
        "encoder": "SASRec",
        "encoder_version": "mmesid SASRec (Kang & McAuley 2018)",
        "checkpoint": str(checkpoint),
        "loss": train_config.loss,
        "seed": train_config.seed,
        "best_epoch": result.best_epoch,
        "valid_NDCG@10": result.valid["NDCG@10"],
        "test_NDCG@10": result.test["NDCG@10"],
        "normalised": False,
        "item_table_sha256": table_sha256.hexdigest(),
    }
    return EmbeddingTable(values=values, attrs=attrs), save


def _print_metrics(valid: dict[str, float], test: dict[str, float]) -> None:
    table = Table(title="SASRec: full ranking, history masked")
    for column in ("metric", "valid", "test"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name in valid:
        table.add_row(name, f"{valid[name]:.4f}", f"{test[name]:.4f}")
    out.print(table)


def register(app: typer.Typer) -> None:
    app.command("embed", short_help="Embed items: text, image, collab (SASRec) or imported.")(embed)
