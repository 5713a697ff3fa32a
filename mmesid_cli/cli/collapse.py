"""``mmesid collapse``: the singular value spectrum and effective rank of item-token matrices."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import typer

from mmesid_cli.analysis.spaces import RUN_PARTS
from mmesid_cli.artifacts.atomic import check_outputs
from mmesid_cli.cli.console import console, out
from mmesid_cli.cli.options import SEED_MAX, non_negative, threads_option
from mmesid_cli.errors import UserError
from mmesid_cli.threads import use_threads


def _read_matrices(spec: str, sids: Path | None) -> list[tuple[str, np.ndarray, str, dict]]:
    """(name, N × d matrix, stored dtype, info) for one ``FILE[:NAME]`` source."""
    from mmesid_cli.analysis.spaces import read_matrices
    from mmesid_cli.cli.concordance import split_spec

    path, name = split_spec(spec)
    if path.is_dir() and (path / "config.json").is_file():
        with console.status(f"loading the run {path}"):
            return read_matrices(path, name, sids)
    return read_matrices(path, name, sids)


def _available_bytes() -> int:
    """Memory available to this process now (MemAvailable), else the physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _check_fits(name: str, shape: tuple[int, ...], dim: int) -> None:
    """A random projection needs the d × dim map, the N × dim result and the SVD's copies
    of it (float64): estimated, and refused when it exceeds the memory available."""
    rows, cols = int(shape[0]), int(shape[1])
    need = 4 * cols * dim + 4 * rows * dim + 2 * 8 * rows * dim + 8 * min(rows, dim) ** 2
    have = _available_bytes()
    if need > have:
        raise UserError(
            f"--project {dim}: projecting {name} ({rows:,} × {cols:,}) needs about "
            f"{need / 2**30:,.1f} GiB, more than the {have / 2**30:,.1f} GiB available"
        )


def collapse_command(
    sources: list[str] = typer.Argument(
        ...,
        help="Item matrices: FILE.h5[:MODALITY] (embedding tables), FILE.safetensors:TENSOR (any "
        "2-D tensor of an mmesid file), FILE.safetensors:MODALITY with --sids (the SID space: "
        "each item's sum of codewords), or RUN_DIR[:PART], a finetune run's LLM input per item: "
        + RUN_PARTS
        + ".",
    ),
    project: list[int] | None = typer.Option(
        None,
        "--project",
        min=1,
        help="Also measure a random linear projection of each matrix to this many dimensions "
        "(the paper's case: 64 -> 4096); repeatable.",
    ),
    seed: int = typer.Option(
        0, "--seed", min=0, max=SEED_MAX, help="Seed of the random projections."
    ),
    sids: Path | None = typer.Option(None, "--sids", help="sids.h5 for SID-space sources."),
    center: bool = typer.Option(False, "--center", help="Subtract the column means first."),
    rtol: float | None = typer.Option(
        None,
        "--rtol",
        callback=non_negative,
        help="Singular values at most rtol·σ_max count as zero (default: max(N, d)·eps of the "
        "stored dtype, as numpy.linalg.matrix_rank).",
    ),
    report: Path | None = typer.Option(None, "-o", "--out", help="Write the JSON report here."),
    plot: Path | None = typer.Option(None, "--plot", help="Draw the spectra (.png/.pdf/.svg)."),
    threads: int | None = threads_option(),
) -> None:
    """Embedding collapse (docs/method.md §1): singular spectrum and rank of item matrices.

    Numerical rank, effective rank (Roy & Vetterli 2007) and the dimensions holding 90% / 99%
    of the energy.

    Examples:

    \b
      mmesid collapse emb.h5:collab --project 576 --project 4096 \\
          --plot collapse.png
      mmesid collapse runs/e4srec runs/mmesid runs/mmesid:collab.projection \\
          -o ranks.json

    Guide: docs/cli.md (collapse).
    """
    from mmesid_cli.cli.concordance import require_plot

    started = time.perf_counter()
    if any(dim < 1 for dim in project or []):
        raise UserError("--project dimensions must be at least 1")
    if rtol is not None and rtol < 0:
        raise UserError("--rtol must be 0 or more")
    require_plot(plot)
    check_outputs(report, plot, inputs=(sids, *(Path(s.split(":")[0]) for s in sources)))
    threads = use_threads(threads)
    from mmesid_cli.analysis.collapse import random_projection, spectrum

    matrices = [m for spec in sources for m in _read_matrices(spec, sids)]
    for name, matrix, _, _ in matrices:  # refuse a projection that cannot fit, before any
        for dim in project or []:
            _check_fits(name, matrix.shape, dim)
    rows: list[dict[str, object]] = []
    for name, matrix, dtype, info in matrices:
        variants = [(name, matrix, dtype, {**info, "projection": None})]
        for dim in project or []:
            projected = random_projection(matrix, dim, seed)
            variants.append(
                (
                    f"{name} → {dim} (random linear)",
                    projected,
                    "float32",
                    {
                        **info,
                        "projection": {
                            "kind": "random linear, N(0, 1/d)",
                            "dim": dim,
                            "seed": seed,
                        },
                    },
                )
            )
        for label, values, stored, extra in variants:
            try:
                result = spectrum(values, center=center, rtol=rtol, dtype=stored)
            except ValueError as exc:
                raise UserError(f"{label}: {exc}", path=str(extra["source"])) from None
            rows.append({"matrix": label, **extra, **result.as_dict()})

    _print_table(rows)
    if report is not None:
        from mmesid_cli.artifacts.reports import environment, write_report

        write_report(
            report,
            "collapse",
            {
                "definitions": {
                    "effective_rank": "exp(−Σ p_k ln p_k), p_k = σ_k / Σσ (Roy & Vetterli 2007)",
                    "energy_dims": "fewest leading directions holding the fraction of Σσ²",
                    "rank": "number of σ_k > rtol·σ_max",
                },
                "settings": {
                    "center": center,
                    "rtol": rtol,
                    "seed": seed,
                    "project": project or [],
                },
                "rows": rows,
                "seconds": time.perf_counter() - started,
                "environment": {**environment(), "threads": threads},
            },
        )
        console.print(f"wrote {report}")
    if plot is not None:
        _plot(plot, rows)
        console.print(f"wrote {plot}")


def _print_table(rows: list[dict[str, object]]) -> None:
    from rich.table import Table

    table = Table(title="Singular value spectrum of item matrices (embedding collapse)")
    for column in ("matrix", "N × d", "rank", "effective rank", "90% energy", "99% energy", "rtol"):
        table.add_column(column, justify="left" if column == "matrix" else "right", overflow="fold")
    for row in rows:
        n, d = row["shape"]  # type: ignore[misc]
        energy = row["energy_dims"]
        table.add_row(
            str(row["matrix"]),
            f"{n:,} × {d:,}",
            f"{row['rank']:,} / {min(n, d):,}",
            f"{row['effective_rank']:.1f}",
            str(energy["0.90"]),  # type: ignore[index]
            str(energy["0.99"]),  # type: ignore[index]
            f"{row['rtol']:.2g}",
        )
    out.print(table)


def _plot(path: Path, rows: list[dict[str, object]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmesid_cli.cli.concordance import save_figure

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for i, row in enumerate(rows):
        values = np.asarray(row["singular_values"], dtype=np.float64)
        if values.size == 0 or values[0] <= 0:
            continue
        k = np.arange(1, values.size + 1)
        color = f"C{i % 10}"
        relative = np.maximum(values / values[0], 1e-18)
        left.plot(k, relative, color=color, label=f"{row['matrix']} (rank {row['rank']})")
        left.axhline(float(row["rtol"]), color=color, linestyle=":", linewidth=1)  # type: ignore[arg-type]
        energy = np.cumsum(values**2) / np.sum(values**2)
        right.plot(k, energy, color=color, label=str(row["matrix"]))
    left.set_yscale("log")
    left.set_xscale("log")
    left.set_xlabel("k")
    left.set_ylabel("σ_k / σ_1 (dotted: tolerance)")
    left.set_title("singular values")
    left.legend(fontsize=7)
    right.set_xscale("log")
    right.set_xlabel("k")
    right.set_ylabel("cumulative energy Σσ² fraction")
    for q in (0.9, 0.99):
        right.axhline(q, color="grey", linestyle="--", linewidth=0.8)
    right.set_title("energy")
    figure.tight_layout()
    save_figure(figure, path)


def register(app: typer.Typer) -> None:
    app.command("collapse", short_help="Singular spectrum and effective rank of item matrices.")(
        collapse_command
    )
