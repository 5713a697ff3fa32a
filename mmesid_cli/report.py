"""The reproduction report: ranking, order kept, collapse and learning curves, from mmesid
JSON reports.

:func:`build_report` turns ``evaluate``, ``concordance``, ``collapse`` and ``curve`` reports
into :class:`Section` tables (one per kind, in that order), optionally with published figures
beside them (:mod:`mmesid_cli.published`); :func:`to_markdown` renders them. Nothing here
computes a figure: every number comes from a report, and each section says how it was made.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from mmesid_cli import published

KINDS = ("evaluate", "concordance", "collapse", "curve")


@dataclass
class Section:
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def _fmt(value: object, digits: int = 4) -> str:
    return "–" if value is None else f"{float(value):.{digits}f}"  # type: ignore[arg-type]


def ranking_section(
    reports: Sequence[tuple[object, dict]], ks: Sequence[int], dataset: str | None = None
) -> Section:
    """HR@K and NDCG@K of each evaluate report (± standard error of NDCG@10), then the
    published rows of ``dataset`` under their own protocols."""
    names = [f"{m}@{k}" for m in ("HR", "NDCG") for k in ks]
    se_of = "NDCG@10" if 10 in ks else f"NDCG@{ks[-1]}"
    header = ["model", "split", "users", *names, f"s.e. {se_of}", "protocol"]
    rows, protocols = [], {}
    for path, report in reports:
        metrics = report.get("metrics", {})
        protocol = report.get("protocol", {})
        stderr = report.get("stderr", {}).get(se_of)
        text = str(protocol.get("protocol", ""))
        tag = protocols.setdefault(text, f"[{len(protocols) + 1}]")
        rows.append(
            [
                str(report.get("model") or path),
                str(protocol.get("split")),
                f"{protocol.get('users', 0):,}",
                *(_fmt(metrics.get(name)) for name in names),
                _fmt(stderr),
                tag if text else "–",
            ]
        )
    notes = [f"{tag} {text}" for text, tag in protocols.items() if text]
    samples = {
        (p.get("users"), p.get("users_eligible"), str(p.get("user_sample")))
        for _, r in reports
        for p in [r.get("protocol", {})]
    }
    for users, eligible, sample in sorted(samples, key=str):
        if sample != "None":
            notes.append(f"{users:,} of {eligible:,} eligible users, {_sample(sample)}.")
    if dataset is not None:
        for row in published.RANKING[dataset]:
            rows.append(
                [
                    f"published: {row.system}",
                    "test",
                    "–",
                    *(_fmt(row.metrics.get(name)) for name in names),
                    "–",
                    row.protocol,
                ]
            )
        notes.append(
            f"Published rows ({dataset}, sources in docs/method.md §6) come from other code "
            "under their own protocols: compare only rows with the same protocol."
        )
    return Section("Ranking (leave-one-out, test split)", header, rows, notes)


def concordance_section(reports: Sequence[tuple[object, dict]], paper: bool = False) -> Section:
    """Kendall tau (formula 9) of every compared space at its full SID depth, per modality;
    with ``paper``, the paper's Beauty figure beside each space the example pipeline names."""
    header = ["space", "modality", "levels", "users", "tau-a [95% CI]", "tau-b"]
    header += ["paper tau (Beauty)"] if paper else []
    rows, notes = [], []
    for _, report in reports:
        depth: dict[tuple[str, str], dict] = {}
        for row in report.get("rows", []):
            key = (str(row.get("space")), str(row.get("modality")))
            if key not in depth or (row.get("level") or 0) > (depth[key].get("level") or 0):
                depth[key] = row
        for (space, modality), row in depth.items():
            tau_a, tau_b = row.get("tau_a", {}), row.get("tau_b", {})
            interval = f"[{_fmt(tau_a.get('ci_low'))}, {_fmt(tau_a.get('ci_high'))}]"
            rows.append(
                [
                    space,
                    modality,
                    str(row.get("level") or "–"),
                    f"{row.get('cases', 0):,}",
                    f"{_fmt(tau_a.get('value'))} {interval}",
                    _fmt(tau_b.get("value")),
                    *([_fmt(published.PAPER_TAU.get(space))] if paper else []),
                ]
            )
        settings = report.get("settings", {})
        note = (
            f"{settings.get('similarity')} similarity, target = {settings.get('target')} item, "
            f"users with at least {settings.get('min_history')} history items; "
            f"{settings.get('intervals', 'no intervals')}."
        )
        if note not in notes:
            notes.append(note)
    if paper:
        notes.append(
            "Paper figures (Amazon Beauty; docs/method.md §4, unverified) do not say which "
            "modality or similarity."
        )
    return Section("Order kept by the SIDs (Kendall tau, formula 9)", header, rows, notes)


def collapse_section(reports: Sequence[tuple[object, dict]]) -> Section:
    """Rank and effective rank of every item matrix of the collapse reports."""
    header = ["matrix", "N × d", "rank", "effective rank", "90% energy", "99% energy"]
    rows, notes = [], []
    for _, report in reports:
        for row in report.get("rows", []):
            n, d = row.get("shape", (0, 0))
            energy = row.get("energy_dims", {})
            rows.append(
                [
                    str(row.get("matrix")) + (" (centred)" if row.get("centered") else ""),
                    f"{n:,} × {d:,}",
                    f"{row.get('rank', 0):,} / {min(n, d):,}",
                    _fmt(row.get("effective_rank"), 1),
                    str(energy.get("0.90", "–")),
                    str(energy.get("0.99", "–")),
                ]
            )
        definitions = report.get("definitions", {})
        note = (
            f"effective rank = {definitions.get('effective_rank')}; "
            f"rank = {definitions.get('rank')}."
        )
        if definitions and note not in notes:
            notes.append(note)
    return Section("Embedding collapse (singular value spectrum)", header, rows, notes)


def curve_section(reports: Sequence[tuple[object, dict]]) -> Section:
    """Per run of the curve reports: the best validation NDCG@10 and when it came (labels
    seen, step), then each baseline with the split it was measured on."""
    header = [
        "run",
        "split",
        "objective",
        "points",
        "best NDCG@10",
        "at labels",
        "at step",
        "last loss",
    ]
    rows, notes = [], []
    for _, report in reports:
        for run in report.get("runs", []):
            best = run.get("best") or {}
            rows.append(
                [
                    str(run.get("label")),
                    "valid",
                    str(run.get("objective") or "–"),
                    str(len(run.get("points", []))),
                    _fmt(best.get("NDCG@10")),
                    "–" if best.get("labels") is None else f"{best['labels']:,}",
                    "–" if best.get("step") is None else f"{best['step']:,}",
                    _fmt(run.get("final_loss")),
                ]
            )
        for baseline in report.get("baselines", []):
            rows.append(
                [
                    f"baseline: {baseline.get('label')}",
                    str(baseline.get("split")),
                    *["–"] * 2,
                    _fmt(baseline.get("NDCG@10")),
                    *["–"] * 3,
                ]
            )
        for note in report.get("notes", []):
            if note not in notes:
                notes.append(note)
    return Section("Learning curves (validation NDCG@10 against labels seen)", header, rows, notes)


def build_report(
    reports: Sequence[tuple[object, dict]], ks: Sequence[int], dataset: str | None = None
) -> list[Section]:
    """One section per report kind present, in the order ranking, concordance, collapse,
    learning curves."""
    by_kind: dict[str, list[tuple[object, dict]]] = {kind: [] for kind in KINDS}
    for path, report in reports:
        kind = str(report.get("kind"))
        if kind not in by_kind:
            raise ValueError(f"{path}: a {kind!r} report; expected one of {', '.join(KINDS)}")
        by_kind[kind].append((path, report))
    sections = []
    if by_kind["evaluate"] or dataset is not None:
        sections.append(ranking_section(by_kind["evaluate"], ks, dataset))
    if by_kind["concordance"]:
        sections.append(concordance_section(by_kind["concordance"], paper=dataset is not None))
    if by_kind["collapse"]:
        sections.append(collapse_section(by_kind["collapse"]))
    if by_kind["curve"]:
        sections.append(curve_section(by_kind["curve"]))
    return sections


def _sample(sample: str) -> str:
    """'{'size': 300, 'seed': 0}' (a user sample as the protocol records it) in words."""
    found = dict(re.findall(r"'(\w+)': (\w+)", sample))
    if "size" in found and "seed" in found:
        return f"a seeded sample of {int(found['size']):,} users (seed {found['seed']})"
    return "a seeded sample"


@dataclass
class FinetuneBudget:
    """What one fine-tuning run trained on, from its config.json summary."""

    label: str
    steps: int
    batch_size: int
    labels: int | None  # training labels seen
    epoch_labels: int | None  # training labels in one epoch of the full data set


PAPER_EPOCHS = 4  # the paper fine-tunes for 4 epochs (docs/method.md §5)


def finetune_budget(label: str, config: dict, epoch_labels: int | None) -> FinetuneBudget:
    summary = config.get("summary", {}) or {}
    training = config.get("training", {}) or {}
    return FinetuneBudget(
        label,
        int(summary.get("steps") or 0),
        int(training.get("batch_size") or 0),
        summary.get("labels"),
        epoch_labels,
    )


def budget_banner(runs: Sequence[FinetuneBudget], stated: Sequence[str] = ()) -> list[str]:
    """The lines of the banner that opens a report: the budget of each step, and whether
    figures at that budget can test the paper (fine-tuning for less than one epoch cannot)."""
    lines = list(stated)
    short = False
    for run in runs:
        line = f"fine-tuning {run.label}: {run.steps:,} steps × {run.batch_size} sequences"
        if run.labels is not None:
            line += f", {run.labels:,} training labels"
        if run.labels is not None and run.epoch_labels:
            fraction = run.labels / run.epoch_labels
            short = short or fraction < 1
            line += f" = {fraction:.3g} of an epoch ({run.epoch_labels:,} labels)"
        lines.append(line + f"; the paper trains {PAPER_EPOCHS} epochs")
    if short:
        lines.append(
            "Fine-tuning saw less than one epoch: the ranking figures at this budget check that "
            "the pipeline runs, they do not test the paper."
        )
    return lines


def to_markdown(
    sections: Sequence[Section], title: str | None = None, banner: Sequence[str] = ()
) -> str:
    lines = [f"# {title}", ""] if title else []
    if banner:
        lines += ["> **Budget.**", ">"]
        lines += [f"> - {line}" for line in banner]
        lines.append("")
    for section in sections:
        lines += [f"## {section.title}", ""]
        lines.append("| " + " | ".join(section.header) + " |")
        lines.append("|" + "---|" * len(section.header))
        lines += [
            "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
            for row in section.rows
        ]
        if section.notes:
            lines.append("")
            lines += [f"- {note}" for note in section.notes]
        lines.append("")
    return "\n".join(lines)
