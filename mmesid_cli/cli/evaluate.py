"""``mmesid evaluate`` (full-ranking metrics of a run or a baseline) and ``mmesid report``."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer
from rich.table import Table

from mmesid_cli.artifacts.atomic import check_outputs, committed_together
from mmesid_cli.cli.console import console, out, print_section, progress
from mmesid_cli.cli.options import SEED_MAX, threads_option
from mmesid_cli.cli.tables import print_titled
from mmesid_cli.errors import UserError
from mmesid_cli.published import RANKING
from mmesid_cli.threads import use_threads


class Baseline(StrEnum):
    popularity = "popularity"
    sasrec = "sasrec"


class SplitName(StrEnum):
    test = "test"
    valid = "valid"


def _parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError:
        raise UserError(f"--k must be comma-separated integers, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise UserError(f"--k needs positive cut-offs, got {text!r}")
    return ks


def evaluate(
    run_dir: Path | None = typer.Argument(
        None, help="A `mmesid finetune` run directory (omit with --baseline)."
    ),
    sequences: Path = typer.Option(
        ..., "--sequences", help="sequences.jsonl (the same users the model was trained on)."
    ),
    items: Path = typer.Option(
        ..., "--items", help="items.jsonl: the catalogue, in the row order of the embeddings."
    ),
    split: SplitName = typer.Option(
        SplitName.test, "--split", help="test: target = last item; valid: target = second to last."
    ),
    k: str = typer.Option("5,10,20", "--k", help="Cut-offs K for HR@K, NDCG@K and MRR@K."),
    baseline: Baseline | None = typer.Option(
        None,
        "--baseline",
        help="Evaluate a baseline instead of a run: popularity (training-part counts) or sasrec (needs --checkpoint).",
    ),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="sasrec.safetensors written by `mmesid embed --modality collab`."
    ),
    json_out: Path | None = typer.Option(
        None, "--json", help="Write the figures and the protocol as a JSON report."
    ),
    per_user: Path | None = typer.Option(
        None, "--per-user", help="Write each evaluated user's target and its 0-based rank as JSONL."
    ),
    batch_size: int | None = typer.Option(
        None,
        "--batch-size",
        min=1,
        help="Users scored per matmul (default 256; 32 for a run on a CPU, the LLM's own chunk, "
        "so progress moves).",
    ),
    max_users: int | None = typer.Option(
        None,
        "--max-users",
        min=1,
        help="Evaluate a seeded random subset of this many users (recorded in the protocol); default all.",
    ),
    seed: int = typer.Option(
        0, "--seed", min=0, max=SEED_MAX, help="Seed of the --max-users subset."
    ),
    device: str = typer.Option(
        "auto", "--device", help="auto (CUDA when present), cpu, cuda or cuda:N."
    ),
    threads: int | None = threads_option(),
) -> None:
    """Full-ranking HR/NDCG/MRR@K with the user's history masked, for a run or a baseline.

    Every item of the catalogue is a candidate; history items score -inf (except the
    target); ties are pessimistic. The protocol is written next to every figure.

    Examples:

    \b
      mmesid evaluate runs/mmesid --sequences seq.jsonl --items items.jsonl \\
          --json mmesid.json
      mmesid evaluate --baseline popularity --sequences seq.jsonl \\
          --items items.jsonl --json pop.json

    Guide: docs/cli.md (evaluate).
    """
    from mmesid_cli.data.records import read_items, read_sequences
    from mmesid_cli.evaluation import evaluate_scorer
    from mmesid_cli.scorers import load_scorer

    ks = _parse_ks(k)
    if (run_dir is None) == (baseline is None):
        raise UserError("give either a RUN_DIR or --baseline (not both, not neither)")
    if baseline is Baseline.sasrec and checkpoint is None:
        raise UserError("--baseline sasrec needs --checkpoint sasrec.safetensors")
    check_outputs(json_out, per_user, inputs=(sequences, items, checkpoint))
    threads = use_threads(threads)
    if baseline is not Baseline.popularity:
        from mmesid_cli.encoders import resolve_device

        resolve_device(device)  # an unknown device fails before a model is loaded
    item_table = read_items(items)
    if ks[-1] >= len(item_table):
        raise UserError(
            f"--k {ks[-1]} is not below the {len(item_table):,} items of the catalogue: every "
            "model would score HR@K = 1",
            path=items,
        )
    seq_table = read_sequences(sequences, item_table)
    scorer, model_name = load_scorer(
        run_dir, baseline and baseline.value, checkpoint, item_table, seq_table, device
    )
    from mmesid_cli.data.split import eval_cases

    n_users = len(eval_cases(seq_table, split.value))
    if max_users is not None:
        if max_users < 1:
            raise UserError(f"--max-users must be at least 1, got {max_users}")
        n_users = min(n_users, max_users)
    if batch_size is None:
        import torch

        on_gpu = device != "cpu" and torch.cuda.is_available()
        # A run scores 32 users per LLM pass on a CPU: batches of 32 cost the same and let
        # the bar move every few seconds instead of once per minute (ranks do not change).
        batch_size = 32 if run_dir is not None and not on_gpu else 256
    with progress() as bar:
        task = bar.add_task(f"ranking {item_table.__len__():,} items", total=n_users)
        result = evaluate_scorer(
            scorer,
            seq_table,
            split.value,
            ks,
            batch_size,
            model=model_name,
            progress=lambda n: bar.advance(task, n),
            max_users=max_users,
            seed=seed,
        )
    _print(
        result.metrics,
        ks,
        f"{model_name} — {split.value}, {result.protocol['users']:,} users, {seq_table.n_items:,} items",
    )
    with committed_together():  # --per-user and --json: both or neither
        if per_user is not None:
            from mmesid_cli.artifacts.atomic import write_text_atomic

            lines = [
                json.dumps(
                    {
                        "user_id": seq_table.user_ids[u],
                        "target": item_table.records[t]["item_id"],
                        "rank": int(r),
                    },
                    ensure_ascii=False,
                )
                for u, t, r in zip(result.users, result.targets, result.ranks, strict=True)
            ]
            write_text_atomic(per_user, "\n".join(lines) + "\n")
        if json_out is not None:
            from mmesid_cli.artifacts.reports import environment, write_report

            write_report(
                json_out,
                "evaluate",
                {
                    "model": model_name,
                    "metrics": result.metrics,
                    "stderr": result.stderr,
                    "protocol": result.protocol,
                    "inputs": {
                        "sequences": str(sequences),
                        "items": str(items),
                        "run_dir": str(run_dir) if run_dir else None,
                        "checkpoint": str(checkpoint) if checkpoint else None,
                    },
                    "environment": {**environment(), "threads": threads},
                },
            )
            console.print(f"wrote {json_out}")


def _print(metrics: dict[str, float], ks: list[int], title: str) -> None:
    table = Table()
    table.add_column("K", justify="right")
    for name in ("HR", "NDCG", "MRR"):
        table.add_column(f"{name}@K", justify="right")
    for cut in ks:
        table.add_row(str(cut), *(f"{metrics[f'{n}@{cut}']:.4f}" for n in ("HR", "NDCG", "MRR")))
    print_titled(out, title, table)


def report(
    reports: list[Path] = typer.Argument(
        ...,
        help="JSON reports of `mmesid evaluate`, `concordance`, `collapse` and `curve`, in any "
        "order; each kind becomes one table.",
    ),
    markdown: Path | None = typer.Option(
        None, "--markdown", help="Also write the tables and their notes as Markdown."
    ),
    k: str = typer.Option("5,10,20", "--k", help="Cut-offs to show."),
    published: str | None = typer.Option(
        None,
        "--published",
        help="Add a data set's published figures beside the ranking, each under its own "
        "protocol: " + ", ".join(sorted(RANKING)) + ".",
    ),
    title: str | None = typer.Option(None, "--title", help="Title of the Markdown report."),
    budget: list[str] | None = typer.Option(
        None,
        "--budget",
        help="A line for the budget banner, e.g. 'tokeniser: 8 epochs' (repeatable).",
    ),
) -> None:
    """Put evaluate, concordance, collapse and curve reports into one (terminal and Markdown).

    Ranking (HR/NDCG@K with the standard error of NDCG@10 and the protocol), the order kept
    by the SIDs (Kendall tau at full SID depth), the rank and effective rank of item
    matrices and the best validation NDCG@10 of learning curves with their baselines.

    A budget banner opens the report: the --budget lines, then the steps, labels and
    fraction of an epoch of every evaluated finetune run. With --published, the paper's tau
    stands beside the spaces the example pipeline names (mse, mmd,
    finetuned-codebook-init, finetuned-random-init).

    Example:

    \b
      mmesid report eval/*.json concordance.json collapse.json \\
          --published beauty --markdown report.md

    Guide: docs/cli.md (report).
    """
    from mmesid_cli.artifacts.reports import read_report
    from mmesid_cli.report import KINDS, budget_banner, build_report, to_markdown

    ks = _parse_ks(k)
    check_outputs(markdown, inputs=tuple(reports))
    if published is not None and published not in RANKING:
        raise UserError(f"--published: no figures for {published!r} (have: {', '.join(RANKING)})")
    loaded = [(path, read_report(path, kind=KINDS)) for path in reports]
    sections = build_report(loaded, ks, published)
    banner = budget_banner(_run_budgets(loaded), budget or [])
    if banner:
        out.print("[bold]Budget[/bold]")
        for line in banner:
            out.print(f"- {line}", highlight=False)
    for section in sections:
        print_section(section)
    if markdown is not None:
        from mmesid_cli.artifacts.atomic import write_text_atomic

        write_text_atomic(markdown, to_markdown(sections, title, banner))
        console.print(f"wrote {markdown}")


def _run_budgets(loaded: list[tuple[Path, dict]]) -> list:
    """The budget of every finetune run an evaluate report names, where its files are still
    there (a report read elsewhere simply has no budget lines)."""
    from mmesid_cli.artifacts.runs import read_run_config
    from mmesid_cli.data.records import read_items, read_sequences
    from mmesid_cli.data.split import split_sizes
    from mmesid_cli.report import finetune_budget

    budgets, epoch_labels = [], {}
    for _, report in loaded:
        inputs = report.get("inputs") or {}
        run_dir = inputs.get("run_dir")
        if report.get("kind") != "evaluate" or not run_dir:
            continue
        try:
            config = read_run_config(Path(run_dir) / "config.json")
            key = (inputs.get("sequences"), inputs.get("items"))
            if key not in epoch_labels:
                table = read_sequences(key[0], read_items(key[1]))
                epoch_labels[key] = split_sizes(table)["train_samples"]
        except (UserError, OSError, TypeError):
            continue
        budgets.append(finetune_budget(Path(run_dir).name, config, epoch_labels[key]))
    return budgets


def register(app: typer.Typer) -> None:
    app.command("evaluate", short_help="Full-ranking HR/NDCG/MRR@K of a run or a baseline.")(
        evaluate
    )
    app.command("report", short_help="One table of evaluate, concordance, collapse, curve.")(report)
