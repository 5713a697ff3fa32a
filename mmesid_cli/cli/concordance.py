"""``mmesid concordance``: formula 9 between the pretrained space and SID spaces or other tables.

Parses the options, reads the spaces in the embeddings' item rows
(:mod:`mmesid_cli.analysis.spaces`), calls :mod:`mmesid_cli.analysis.concordance`, prints the
comparison table and writes the report. ``FILE[:NAME]`` parsing and the plot helpers are
shared with ``mmesid collapse``.
"""

from __future__ import annotations

import io
import os
import time
from enum import StrEnum
from pathlib import Path

import numpy as np
import typer

from mmesid_cli.analysis.spaces import Source, default_modalities, load_sources
from mmesid_cli.artifacts.atomic import check_outputs
from mmesid_cli.cli.console import console, out, progress
from mmesid_cli.cli.options import SEED_MAX, open_unit, threads_option
from mmesid_cli.errors import UserError
from mmesid_cli.threads import available_cores


class Similarity(StrEnum):
    cosine = "cosine"
    dot = "dot"
    neg_l2 = "neg-l2"


class Target(StrEnum):
    test = "test"
    valid = "valid"
    all_positions = "all-positions"


PLOT_FORMATS = ("png", "pdf", "svg")


# ---------------------------------------------------------------------------------------------
# Option parsing and plot output shared with `mmesid collapse`


def split_spec(spec: str) -> tuple[Path, str | None]:
    """``FILE[:NAME]`` -> (FILE, NAME); a path that exists as written has no NAME."""
    if Path(spec).exists() or ":" not in spec:
        return Path(spec), None
    path, name = spec.rsplit(":", 1)
    if not name or "/" in name or os.sep in name:
        return Path(spec), None
    return Path(path), name


def require_plot(path: Path | None) -> None:
    """Fail before any work if a plot cannot be written: bad suffix or no matplotlib."""
    if path is None:
        return
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in PLOT_FORMATS:
        raise UserError(f"plot format must be one of {', '.join(PLOT_FORMATS)}", path=path)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'mmesid[plots]'", path=path) from None


def save_figure(figure, path: Path) -> None:
    """Render ``figure`` in memory, then write it atomically."""
    import matplotlib.pyplot as plt

    from mmesid_cli.artifacts.atomic import write_bytes_atomic

    buffer = io.BytesIO()
    figure.savefig(buffer, format=path.suffix.lower().lstrip("."), dpi=120, bbox_inches="tight")
    plt.close(figure)
    write_bytes_atomic(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------------
# Spaces to compare


def _load_sources(
    codebooks: list[Path],
    sids: list[Path],
    candidates: list[str],
    labels: list[str],
    item_ids: list[str],
    embeddings: Path,
    needed: np.ndarray,
) -> list[Source]:
    """Check the options that name the spaces, then read them (mmesid_cli.analysis.spaces)."""
    if codebooks and not sids:
        raise UserError("--codebook needs --sids (the codes of the items)")
    if sids and not codebooks:
        raise UserError("--sids needs a --codebook")
    if len(sids) not in (1, len(codebooks)):
        raise UserError(
            f"give one --sids for all codebooks or one per --codebook "
            f"(got {len(sids)} for {len(codebooks)})"
        )
    if labels and len(labels) != len(codebooks) + len(candidates):
        raise UserError(
            f"--label names the spaces in order (codebooks, then candidates): got {len(labels)} "
            f"labels for {len(codebooks) + len(candidates)} spaces"
        )
    if len(set(labels)) != len(labels):
        raise UserError("--label values must be distinct")
    specs = [split_spec(spec) for spec in candidates]
    return load_sources(codebooks, sids, specs, labels, item_ids, embeddings, needed)


# ---------------------------------------------------------------------------------------------
# The command


def _fmt(estimate: dict[str, float | None], digits: int = 4) -> str:
    """The value, and its interval on a second line."""
    value = estimate["value"]
    if value is None:
        return "–"
    text = f"{value:.{digits}f}"
    if estimate.get("ci_low") is not None:
        text += f"\n[{estimate['ci_low']:.3f}, {estimate['ci_high']:.3f}]"
    return text


def concordance_command(
    embeddings: Path = typer.Option(
        ..., "--embeddings", "-e", help="embeddings.h5: the pretrained space (reference order)."
    ),
    sequences: Path = typer.Option(..., "--sequences", "-s", help="sequences.jsonl"),
    codebook: list[Path] | None = typer.Option(
        None,
        "--codebook",
        help="A safetensors file with codebook.<modality>.<level> tensors (a tokenizer, or the "
        "SID tables a finetune run exports); repeat to compare several.",
    ),
    sids: list[Path] | None = typer.Option(
        None, "--sids", help="sids.h5 for the codebooks: one for all, or one per --codebook."
    ),
    candidate: list[str] | None = typer.Option(
        None,
        "--candidate",
        help="Any second table, FILE.h5[:MODALITY]: without MODALITY each reference modality is "
        "compared with the table of the same name; repeatable.",
    ),
    label: list[str] | None = typer.Option(
        None, "--label", help="Names of the spaces, in order: codebooks, then candidates."
    ),
    modality: list[str] | None = typer.Option(
        None,
        "--modality",
        "-m",
        help="Reference modalities (default: those every compared space covers).",
    ),
    similarity: Similarity = typer.Option(Similarity.cosine, "--similarity", help="sim(·,·)."),
    target: Target = typer.Option(
        Target.test,
        "--target",
        help="test: last item (history: all before it); valid: second to last; all-positions: "
        "every item after a user's first.",
    ),
    min_history: int = typer.Option(2, "--min-history", min=2, help="Drop shorter histories."),
    max_history: int | None = typer.Option(
        None, "--max-history", min=2, help="Keep only the most recent items of a history."
    ),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Resamples of users (0: no CI)."),
    confidence: float = typer.Option(
        0.95, "--confidence", callback=open_unit, help="Level of the intervals."
    ),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help="Seed of the bootstrap."),
    threads: int | None = threads_option("workers counting pairs"),
    workers: int | None = typer.Option(
        None, "--workers", min=1, hidden=True, help="Old name of --threads."
    ),
    chunk_mb: int = typer.Option(16, "--chunk-mb", help="Working memory per worker, MiB."),
    report: Path | None = typer.Option(None, "-o", "--out", help="Write the JSON report here."),
    plot: Path | None = typer.Option(
        None, "--plot", help="Draw the per-user tau distribution of each space (.png/.pdf/.svg)."
    ),
) -> None:
    """Formula 9: how much pretrained similarity order each SID space keeps (Kendall's tau).

    Per user, the history items ordered by similarity to the target in the pretrained space
    and in each SID space (per prefix level) or candidate table; tau-a, tau-b and the
    concordant-pair fraction with bootstrap intervals.

    Example:

    \b
      mmesid concordance -e emb.h5 -s seq.jsonl \\
          --codebook mmd/tokenizer.safetensors --sids mmd/sids.h5 \\
          --codebook mse/tokenizer.safetensors --sids mse/sids.h5 -o tau.json

    Guide: docs/cli.md (concordance); formula 9: docs/method.md §4.
    """
    started = time.perf_counter()
    codebooks, sid_files, candidates = list(codebook or []), list(sids or []), list(candidate or [])
    if not codebooks and not candidates:
        raise UserError("nothing to compare: give --codebook with --sids, or --candidate")
    if not 0.0 < confidence < 1.0:
        raise UserError("--confidence must lie strictly between 0 and 1")
    if min_history < 2:
        raise UserError("--min-history must be at least 2 (a user needs one pair of items)")
    if max_history is not None and max_history < min_history:
        raise UserError("--max-history must be at least --min-history")
    for option, value, least in (
        ("--bootstrap", bootstrap, 0),
        ("--chunk-mb", chunk_mb, 1),
    ):
        if value < least:
            raise UserError(f"{option} must be at least {least}")
    require_plot(plot)
    check_outputs(report, plot, inputs=(embeddings, sequences, *(codebook or []), *(sids or [])))

    from mmesid_cli.analysis.concordance import (
        ConcordanceConfig,
        cases_for,
        concordance,
        summarise,
    )
    from mmesid_cli.artifacts.embeddings import list_modalities, read_embeddings
    from mmesid_cli.data.records import ItemTable, read_sequences

    config = ConcordanceConfig(
        similarity=similarity.value,
        target=target.value,
        min_history=min_history,
        max_history=max_history,
        bootstrap=bootstrap,
        confidence=confidence,
        seed=seed,
        chunk_bytes=chunk_mb << 20,
        workers=threads or workers or available_cores(),  # numpy work: one thread per worker
    )
    available = list_modalities(embeddings)
    reference = read_embeddings(embeddings, list(modality) if modality else None)
    items = ItemTable(records=[{"item_id": i} for i in reference.item_ids], path=embeddings)
    seq = read_sequences(sequences, items)
    needed = np.unique(np.concatenate(seq.items)) if len(seq) else np.zeros(0, dtype=np.int64)
    sources = _load_sources(
        codebooks, sid_files, candidates, list(label or []), reference.item_ids, embeddings, needed
    )
    modalities = list(modality) if modality else default_modalities(available, sources)
    if not modalities:
        raise UserError(
            "no modality is covered by the embeddings and every compared space "
            f"(embeddings: {available}); choose one with --modality",
            path=embeddings,
        )
    for m in modalities:
        for source in sources:
            if not source.covers(m):
                where = source.info.get("codebook") or source.info.get("file")
                raise UserError(f"has no {m!r} table to compare", path=str(where))

    rows: list[dict[str, object]] = []
    per_user: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    users: dict[str, dict[str, object]] = {}
    for m in modalities:
        ref_table = reference.table(m, embeddings)
        present = ref_table.present
        spaces: dict[str, np.ndarray] = {}
        meta: dict[str, tuple[Source, int | None, int]] = {}
        for source in sources:
            tables, source_present = source.tables(m)
            if source_present is not None:
                present = source_present if present is None else present & source_present
            for level, table in enumerate(tables, start=1):
                key = f"{source.label}@{level}" if source.kind == "codebook" else source.label
                spaces[key] = table
                meta[key] = (source, level if source.kind == "codebook" else None, len(tables))
        cases = cases_for(seq.items, config, present)
        if len(cases) == 0:
            raise UserError(
                f"no user has a {config.target} case with at least {min_history} history items",
                path=sequences,
            )
        t0 = time.perf_counter()
        with progress() as bar:
            task = bar.add_task(f"concordance {m}", total=len(cases))
            counts = concordance(
                ref_table.values,
                spaces,
                cases,
                config,
                progress=lambda k, task=task: bar.advance(task, k),
            )
        seconds = time.perf_counter() - t0
        baselines = _baselines(meta, sources[0])
        summary = summarise(counts, config, baselines, groups=cases.users)
        users[m] = {
            "cases": len(cases),
            "users": int(np.unique(cases.users).size),
            "mean_history": float(cases.lengths.mean()),
            "seconds": seconds,
        }
        for key, (source, level, n_levels) in meta.items():
            row: dict[str, object] = {
                "modality": m,
                "space": source.label,
                "kind": source.kind,
                "level": level,
                **summary.spaces[key].as_dict(),
            }
            if key in summary.differences:
                base_source, base_level, _ = meta[baselines[key]]
                row["compared_with"] = {"space": base_source.label, "level": base_level}
                for stat, estimate in summary.differences[key].items():
                    row[f"delta_{stat}"] = estimate.as_dict()
            rows.append(row)
            if level is None or level == n_levels:
                c = counts[key]
                per_user.setdefault(m, {})[source.label] = (c.tau_a(), c.tau_b())

    _print_table(rows, sources, config)
    if report is not None:
        from mmesid_cli.artifacts.reports import environment, write_report

        write_report(
            report,
            "concordance",
            {
                "formula": "docs/method.md §4 (paper formula 9): Kendall tau between the order of "
                "sim(target, history item) in the pretrained space and in each compared space",
                "settings": {
                    **config.as_dict(),
                    "modalities": modalities,
                    "similarity_definition": {
                        "cosine": "e_t·e_h / (|e_t||e_h|), 0 for a zero vector",
                        "dot": "e_t·e_h",
                        "neg-l2": "−|e_t − e_h|² (the order of −|e_t − e_h|)",
                    }[config.similarity],
                    "tau_a": "(C − D) / (n(n−1)/2), mean over users",
                    "tau_b": "(C − D) / sqrt((n0 − n1)(n0 − n2)), mean over users where defined",
                    "concordant_fraction": "ΣC / Σ n(n−1)/2 over users (pooled)",
                    "intervals": f"percentile bootstrap over users (all of a user's cases), "
                    f"{config.bootstrap} resamples, paired across spaces",
                    "sid_space": "prefix level p: sum of the codewords of the first p codes",
                },
                "inputs": {
                    "embeddings": str(embeddings),
                    "sequences": str(sequences),
                    "spaces": [{"label": s.label, "kind": s.kind, **s.info} for s in sources],
                },
                "users": users,
                "rows": rows,
                "seconds": time.perf_counter() - started,
                "environment": {**environment(), "threads": config.workers},
            },
        )
        console.print(f"wrote {report}")
    if plot is not None:
        _plot(plot, per_user, config)
        console.print(f"wrote {plot}")


def _baselines(meta: dict[str, tuple[Source, int | None, int]], first: Source) -> dict[str, str]:
    """Compare every space with the first one at the same level (a candidate: its last)."""
    base = {level: key for key, (s, level, _) in meta.items() if s is first}
    deepest = base[max(base, key=lambda v: v or 0)]
    out: dict[str, str] = {}
    for key, (source, level, _) in meta.items():
        if source is first:
            continue
        match = base.get(level) if level is not None else deepest
        if match is None and first.kind == "candidate":
            match = deepest
        if match is not None:
            out[key] = match
    return out


def _print_table(rows: list[dict[str, object]], sources: list[Source], config) -> None:
    from rich.table import Table

    interval = f"{int(round(config.confidence * 100))}% CI" if config.bootstrap else "no CI"
    table = Table(
        title=f"Formula 9: order kept from the pretrained space ({config.similarity}, "
        f"target {config.target}; mean over users, {interval})"
    )
    compare = len(sources) > 1
    columns = ["modality (cases)", "space", "level", "tau-a", "tau-b", "concordant pairs"]
    if compare:
        columns += [f"Δtau-a vs {sources[0].label}", f"Δtau-b vs {sources[0].label}"]
    for name in columns:
        left = name in ("modality (cases)", "space")
        table.add_column(name, justify="left" if left else "right", overflow="fold")
    for row in rows:
        cells = [
            f"{row['modality']}\n({row['cases']:,})",
            str(row["space"]),
            "–" if row["level"] is None else str(row["level"]),
            _fmt(row["tau_a"]),  # type: ignore[arg-type]
            _fmt(row["tau_b"]),  # type: ignore[arg-type]
            f"{row['concordant_fraction']['value']:.3f}",  # type: ignore[index]
        ]
        if compare:
            cells += [
                _fmt(row[key]) if key in row else ""  # type: ignore[arg-type]
                for key in ("delta_tau_a", "delta_tau_b")
            ]
        table.add_row(*cells)
    out.print(table)


def _plot(
    path: Path, per_user: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], config
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modalities = list(per_user)
    figure, axes = plt.subplots(
        len(modalities), 2, figsize=(10, 3.2 * len(modalities)), squeeze=False
    )
    for r, m in enumerate(modalities):
        for c, (name, pick) in enumerate([("tau-a", 0), ("tau-b", 1)]):
            ax = axes[r][c]
            for i, (space, taus) in enumerate(per_user[m].items()):
                values = np.sort(taus[pick][~np.isnan(taus[pick])])
                if values.size == 0:
                    continue
                share = np.arange(1, values.size + 1) / max(1, values.size)
                color = f"C{i % 10}"
                ax.step(
                    values,
                    share,
                    where="post",
                    color=color,
                    label=f"{space} (mean {values.mean():.3f})",
                )
                ax.axvline(values.mean(), color=color, linestyle="--", linewidth=1)
            ax.set_title(f"{m}: per-user {name}, cumulative (dashed: mean)")
            ax.set_xlabel(name)
            ax.set_ylabel("share of users ≤ x")
            ax.set_xlim(-1.02, 1.02)
            ax.legend(fontsize=8)
    figure.suptitle(
        f"Formula 9, {config.similarity} similarity, target {config.target}, full SID depth",
        fontsize=10,
    )
    figure.tight_layout()
    save_figure(figure, path)


def register(app: typer.Typer) -> None:
    app.command("concordance", short_help="Formula 9: how much order the SIDs keep (Kendall tau).")(
        concordance_command
    )
