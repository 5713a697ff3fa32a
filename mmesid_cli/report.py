"""The reproduction report: ranking, order kept, collapse and learning curves, from mmesid
JSON reports.

:func:`build_report` turns ``evaluate``, ``concordance``, ``collapse`` and ``curve`` reports
into :class:`Section` tables (one per kind, in that order), optionally with published figures
beside them (:mod:`mmesid_cli.published`); :func:`to_markdown` renders them. Nothing here
computes a figure: every number comes from a report, and each section says how it was made.
"""

from __future__ import annotations

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
            notes.append(f"{users:,} of {eligible:,} eligible users, seeded sample {sample}.")
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
            f"Published rows ({dataset}, design.md) come from other code under their own "
            "protocols: compare only rows with the same protocol."
        )
    return Section("Ranking (leave-one-out, test split)", header, rows, notes)


def concordance_section(reports: Sequence[tuple[object, dict]]) -> Section:
    """Kendall tau (formula 9) of every compared space at its full SID depth, per modality."""
    header = ["space", "modality", "levels", "users", "tau-a [95% CI]", "tau-b", "paper tau"]
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
                    _fmt(published.PAPER_TAU.get(space)),
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
    notes.append(
        "Paper figures (docs/method.md §1, unverified) do not say which modality or similarity."
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
        sections.append(concordance_section(by_kind["concordance"]))
    if by_kind["collapse"]:
        sections.append(collapse_section(by_kind["collapse"]))
    if by_kind["curve"]:
        sections.append(curve_section(by_kind["curve"]))
    return sections


def to_markdown(sections: Sequence[Section], title: str | None = None) -> str:
    lines = [f"# {title}", ""] if title else []
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
