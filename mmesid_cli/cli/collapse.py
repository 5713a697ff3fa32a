"""``mmesid collapse``: the singular value spectrum and effective rank of item-token matrices."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import typer

from mmesid_cli.artifacts.atomic import check_outputs
from mmesid_cli.cli.console import console, out
from mmesid_cli.cli.options import SEED_MAX, non_negative
from mmesid_cli.errors import UserError


def _read_matrices(spec: str, sids: Path | None) -> list[tuple[str, np.ndarray, str, dict]]:
    """(name, N × d matrix, stored dtype, info) for one ``FILE[:NAME]`` source."""
    from mmesid_cli.cli.concordance import read_any_weights, split_spec

    path, name = split_spec(spec)
    if path.is_dir():
        return [_run_tokens(path, name)]
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        from mmesid_cli.artifacts.embeddings import read_embeddings

        embeddings = read_embeddings(path, None if name is None else [name])
        found = []
        for modality, table in embeddings.tables.items():
            values, info = table.values, {"source": str(path), "table": modality}
            if table.present is not None and not table.present.all():
                values = values[table.present]  # items without an input have no embedding
                info["absent_rows_dropped"] = int((~table.present).sum())
            found.append((f"{path.name}:{modality}", values, "float32", info))
        return found
    if suffix == ".safetensors":
        if name is None:
            raise UserError(
                "name a tensor (FILE.safetensors:TENSOR) or a modality with --sids", path=path
            )
        weights = read_any_weights(path)
        if name in weights.tensors:
            tensor = weights.tensors[name]
            if tensor.ndim != 2:
                raise UserError(
                    f"tensor {name!r} has shape {tuple(tensor.shape)}, expected 2-D", path=path
                )
            import torch

            matrix = tensor.detach().to(torch.float32).numpy()
            dtype = str(tensor.dtype).removeprefix("torch.")
            info = {"source": str(path), "tensor": name, "stored_dtype": str(tensor.dtype)}
            return [(f"{path.name}:{name}", matrix, dtype, info)]
        if any(t.startswith(f"codebook.{name}.") for t in weights.tensors):
            return [_sid_space(path, name, sids)]
        some = ", ".join(sorted(weights.tensors)[:8])
        raise UserError(f"has no tensor or codebook named {name!r} (tensors: {some}, …)", path=path)
    if not path.exists():
        raise UserError("not found", path=path)
    raise UserError(
        "expected an .h5 embeddings file, a .safetensors file or a finetune run directory",
        path=path,
    )


RUN_PARTS = "tokens (x_i, the default), <modality>.projection (W_m e_m) or <modality>.sid (S_m)"


def _run_tokens(run_dir: Path, part: str | None) -> tuple[str, np.ndarray, str, dict]:
    """The item tokens a fine-tuned run feeds its LLM, or one of the MLP's inputs: (N, H)."""
    from mmesid_cli.llm4sr.model import item_token_inputs, item_tokens
    from mmesid_cli.llm4sr.run import load_run

    if not (run_dir / "config.json").is_file():
        raise UserError("is a directory but not a finetune run (no config.json)", path=run_dir)
    part = part or "tokens"
    with console.status(f"loading the run {run_dir}"):
        model = load_run(run_dir, device="cpu")
    if part == "tokens":
        matrix = item_tokens(model)
    else:
        inputs = item_token_inputs(model)
        if part not in inputs:
            raise UserError(
                f"has no item-token part {part!r}; parts: tokens, {', '.join(inputs)}",
                path=run_dir,
            )
        matrix = inputs[part]
    spec = model.config["model"]  # type: ignore[attr-defined]
    info = {
        "source": str(run_dir),
        "run_part": part,
        "modalities": spec.get("modalities"),
        "sid_init": spec.get("sid_init"),
    }
    return f"{run_dir.name}:{part}", matrix, "float32", info


def _sid_space(path: Path, modality: str, sids: Path | None) -> tuple[str, np.ndarray, str, dict]:
    """The SID-space vector of every item of ``sids``: the sum of its codewords."""
    from mmesid_cli.analysis.concordance import sid_space_tables
    from mmesid_cli.artifacts.sids import check_made_by, read_sids
    from mmesid_cli.cli.concordance import codes_for_codebooks, read_codebooks

    if sids is None:
        raise UserError(f"the SID space of {modality!r} needs --sids (the items' codes)", path=path)
    books = read_codebooks(path)[modality]
    check_made_by(sids, path)
    sid_file = read_sids(sids)
    codes = sid_file.modality(modality, sids)
    codes = codes_for_codebooks(codes, sid_file.attrs.get(modality, {}), len(books), modality, sids)
    for level, book in enumerate(books, start=1):
        if codes[:, level - 1].max() >= book.shape[0]:
            raise UserError(
                f"codes {modality!r} exceed the {book.shape[0]} codes of level {level}", path=sids
            )
    matrix = sid_space_tables(books, codes)[-1]
    info = {"source": str(path), "sids": str(sids), "modality": modality, "levels": len(books)}
    return f"{path.name}:{modality} (SID space)", matrix, "float32", info


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
    check_outputs(report, plot)
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
                "environment": environment(),
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
