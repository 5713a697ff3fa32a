"""``mmesid curve``: learning curves of finetune runs (validation NDCG@10 against labels seen)."""

from __future__ import annotations

from pathlib import Path

import typer

from mmesid_cli.artifacts.atomic import check_outputs
from mmesid_cli.cli.console import console, print_section
from mmesid_cli.errors import UserError


def _parse_baseline(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep or not label.strip() or not path.strip():
        raise UserError(f"--baseline must be LABEL=FILE (an evaluate --json report), got {text!r}")
    return label.strip(), Path(path.strip())


def curve_command(
    run_dirs: list[Path] = typer.Argument(..., help="`mmesid finetune` run directories."),
    label: list[str] | None = typer.Option(
        None, "--label", help="Name of each run, in order (default: its folder name)."
    ),
    baseline: list[str] | None = typer.Option(
        None, "--baseline", help="LABEL=FILE: a dashed line at an evaluate report's NDCG@10."
    ),
    popularity: bool = typer.Option(
        False, "--popularity", help="Add popularity on the runs' own validation users."
    ),
    sequences: Path | None = typer.Option(
        None, "--sequences", help="sequences.jsonl for --popularity (default: the runs')."
    ),
    plot: Path | None = typer.Option(None, "--plot", help="Draw the curves (.png/.pdf/.svg)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the curves as a report."),
    markdown: Path | None = typer.Option(None, "--markdown", help="Write the table as Markdown."),
    log_x: bool = typer.Option(False, "--log-x", help="Logarithmic labels-seen axis."),
    title: str | None = typer.Option(None, "--title", help="Title of the plot."),
) -> None:
    """Validation NDCG@10 against training labels seen, one line per run.

    Labels seen come from train_log.jsonl; older logs count step × batch size (noted).

    A test-split baseline is marked (test): beside validation curves it is a level, not a gap.

    Example:

    \b
      mmesid curve runs/mmesid runs/e4srec --popularity \\
          --baseline sasrec=eval/sasrec.json --plot curve.png --json curve.json

    Guide: docs/cli.md (curve).
    """
    from mmesid_cli import curves as lib

    baselines_at = [_parse_baseline(text) for text in baseline or []]
    if sequences is not None and not popularity:
        raise UserError("--sequences is read only with --popularity")
    if plot is not None:
        lib.require_matplotlib(plot)
    check_outputs(plot, json_out, markdown, inputs=(sequences,))
    loaded = lib.read_curves(run_dirs, label)
    lines = [lib.report_baseline(name, path) for name, path in baselines_at]
    if popularity:
        with console.status("ranking the validation users by popularity"):
            lines += lib.popularity_baselines(loaded, sequences)
    content = lib.curve_report(loaded, lines, log_x)
    image = None
    if plot is not None:  # drawn before anything is written
        fmt = plot.suffix.lower().lstrip(".")
        image = lib.render_curves(loaded, lines, fmt, log_x, title)

    from mmesid_cli.report import curve_section, to_markdown

    section = curve_section([(None, content)])
    print_section(section)
    if json_out is not None:
        from mmesid_cli.artifacts.reports import environment, write_report

        inputs = {
            "runs": [str(r) for r in run_dirs],
            "baselines": {name: str(path) for name, path in baselines_at},
            "sequences": str(sequences) if sequences else None,
        }
        write_report(json_out, "curve", {**content, "inputs": inputs, "environment": environment()})
        console.print(f"wrote {json_out}")
    if markdown is not None:
        from mmesid_cli.artifacts.atomic import write_text_atomic

        write_text_atomic(markdown, to_markdown([section], title))
        console.print(f"wrote {markdown}")
    if plot is not None and image is not None:
        from mmesid_cli.artifacts.atomic import write_bytes_atomic

        write_bytes_atomic(plot, image)
        console.print(f"wrote {plot}")


def register(app: typer.Typer) -> None:
    app.command("curve", short_help="Validation NDCG@10 against labels seen, per run.")(
        curve_command
    )
