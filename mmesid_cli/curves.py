"""Learning curves of fine-tuning runs: validation NDCG@10 against training labels seen.

:func:`read_run_curve` turns a ``mmesid finetune`` run directory (``config.json`` and
``train_log.jsonl``, read through :mod:`mmesid_cli.artifacts.runs`) into a
:class:`RunCurve`, one :class:`Point` per validation record. The x axis is the cumulative
number of training labels the run had seen: the log's ``labels`` field, or, for logs
written before it existed, ``step × batch_size`` (recorded, so a reader is told).

Baselines are horizontal lines: the NDCG@10 of an ``mmesid evaluate`` report
(:func:`report_baseline`, with the split it was measured on) or the popularity ranking on
exactly the validation users the runs were validated on (:func:`popularity_baselines`).
:func:`render_curves` draws everything with matplotlib, an optional dependency.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from mmesid_cli.errors import UserError

METRIC = "NDCG@10"
CONFIG = "config.json"  # the names mmesid_cli.llm4sr.run writes
RUNNING_CONFIG = "config.running.json"
TRAIN_LOG = "train_log.jsonl"
PLOT_FORMATS = ("png", "pdf", "svg")
ESTIMATED = "step × batch_size"


class Point(NamedTuple):
    """One validation: labels seen by then, the optimiser step and validation NDCG@10."""

    labels: int
    step: int
    ndcg10: float


@dataclass
class RunCurve:
    label: str
    run_dir: Path
    points: list[Point]  # by step
    objective: str | None
    final_loss: float | None  # of the last logged step
    final_step: int | None
    batch_size: int | None
    users: int | None  # validation users, as the log records them
    eval_users: int | None  # the run's setting (None: all eligible users)
    seed: int
    sequences: str | None  # as the run config names it
    estimated: list[int] = field(default_factory=list)  # steps whose labels are step × batch
    item_ids: list[str] = field(default_factory=list, repr=False)  # the run's catalogue

    @property
    def best(self) -> Point:
        """The highest validation NDCG@10; the earliest of equal ones."""
        return max(self.points, key=lambda p: (p.ndcg10, -p.step))

    def as_dict(self) -> dict[str, object]:
        def point(p: Point) -> dict[str, object]:
            return {"labels": p.labels, "step": p.step, METRIC: p.ndcg10}

        return {
            "label": self.label,
            "run_dir": str(self.run_dir),
            "objective": self.objective,
            "batch_size": self.batch_size,
            "labels_from": "log" if not self.estimated else ESTIMATED,
            "labels_estimated_at_steps": self.estimated,
            "validation": {
                "users": self.users,
                "eval_users": self.eval_users,
                "seed": self.seed,
                "sequences": self.sequences,
            },
            "points": [point(p) for p in self.points],
            "best": point(self.best),
            "final_loss": self.final_loss,
            "final_step": self.final_step,
        }


@dataclass
class Baseline:
    """A horizontal line: one NDCG@10 figure and the split it was measured on."""

    label: str
    ndcg10: float
    split: str  # "valid" or "test": a test figure beside validation curves is only a level
    source: str
    users: int | None = None

    @property
    def legend(self) -> str:
        return f"{self.label} ({self.split})"

    def as_dict(self) -> dict[str, object]:
        return {
            "label": self.label,
            METRIC: self.ndcg10,
            "split": self.split,
            "source": self.source,
            "users": self.users,
        }


# ---------------------------------------------------------------------------------------------
# Reading runs


def _int(value: object, what: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise UserError(f"{what} must be an integer, found {value!r}", path=path)
    return int(value)


def read_run_curve(run_dir: str | os.PathLike[str], label: str | None = None) -> RunCurve:
    """The validation curve of one finetune run directory (nothing is computed)."""
    from mmesid_cli.artifacts.runs import TrainingLog, read_run_config

    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UserError("run directory not found", path=run_dir)
    if not run_dir.is_dir():
        raise UserError("is not a directory (expected a finetune run)", path=run_dir)
    config_path = run_dir / CONFIG
    if not config_path.is_file() and (run_dir / RUNNING_CONFIG).is_file():
        config_path = run_dir / RUNNING_CONFIG  # a run still training (or killed): its curve so far
    if not config_path.is_file():
        raise UserError(f"is not a finetune run (no {CONFIG})", path=run_dir)
    config = read_run_config(config_path)
    log_path = run_dir / TRAIN_LOG
    if not log_path.is_file():
        raise UserError(f"has no {TRAIN_LOG} (nothing was logged)", path=run_dir)
    training = config.get("training") or {}
    inputs = config.get("inputs") or {}
    if not isinstance(training, dict) or not isinstance(inputs, dict):
        raise UserError("'training' and 'inputs' must be JSON objects", path=run_dir / CONFIG)
    batch_size = training.get("batch_size")
    batch_size = None if batch_size is None else _int(batch_size, "batch_size", run_dir / CONFIG)

    step_labels: dict[int, int] = {}
    validations: list[dict] = []
    final_loss, final_step = None, None
    for record in TrainingLog(log_path).records():
        if not isinstance(record, dict) or "step" not in record:
            raise UserError(f"a record without a 'step': {record!r:.80}", path=log_path)
        step = _int(record["step"], "'step'", log_path)
        if "valid" in record:
            validations.append(record)
        elif "loss" in record:
            final_loss, final_step = float(record["loss"]), step
            if record.get("labels") is not None:
                step_labels[step] = _int(record["labels"], "'labels'", log_path)
    if not validations:
        raise UserError(
            "has no validation records (was the run trained with --eval-users 0?)", path=log_path
        )

    by_step: dict[int, Point] = {}  # a step validated twice keeps its last record
    estimated: set[int] = set()
    users = None
    for record in validations:
        step = int(record["step"])
        metrics = record["valid"]
        if not isinstance(metrics, dict) or not isinstance(metrics.get(METRIC), (int, float)):
            raise UserError(f"the validation of step {step} has no {METRIC}", path=log_path)
        labels = record.get("labels")
        if labels is None:
            labels = step_labels.get(step)
        if labels is None and step == 0:
            labels = 0
        if labels is None:
            if batch_size is None:
                raise UserError(
                    f"records no 'labels' at step {step}, and {CONFIG} no training.batch_size "
                    "to count them from",
                    path=log_path,
                )
            labels = step * batch_size
            estimated.add(step)
        else:
            estimated.discard(step)
        by_step[step] = Point(_int(labels, "'labels'", log_path), step, float(metrics[METRIC]))
        if record.get("users") is not None:
            users = int(record["users"])

    eval_users = training.get("eval_users")
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    objective = training.get("objective", model.get("objective"))  # type: ignore[union-attr]
    item_ids = config.get("item_ids")
    return RunCurve(
        label=label or run_dir.name,
        run_dir=run_dir,
        points=[by_step[s] for s in sorted(by_step)],
        objective=None if objective is None else str(objective),
        final_loss=final_loss,
        final_step=final_step,
        batch_size=batch_size,
        users=users,
        eval_users=None if eval_users is None else int(eval_users),
        seed=int(training.get("seed", 0)),
        sequences=None if inputs.get("sequences") is None else str(inputs["sequences"]),
        estimated=sorted(estimated),
        item_ids=[str(i) for i in item_ids] if isinstance(item_ids, list) else [],
    )


def read_curves(
    run_dirs: Sequence[str | os.PathLike[str]], labels: Sequence[str] | None = None
) -> list[RunCurve]:
    """One curve per run; labels default to the directory names (full paths where they clash)."""
    if labels and len(labels) != len(run_dirs):
        raise UserError(f"{len(labels)} labels for {len(run_dirs)} runs: give one per run")
    if not labels:
        names = [Path(r).name for r in run_dirs]
        labels = [
            n if names.count(n) == 1 else str(r) for n, r in zip(names, run_dirs, strict=True)
        ]
    return [read_run_curve(r, name) for r, name in zip(run_dirs, labels, strict=True)]


# ---------------------------------------------------------------------------------------------
# Baselines


def report_baseline(label: str, path: str | os.PathLike[str]) -> Baseline:
    """NDCG@10 of an ``mmesid evaluate --json`` report, with the split it was measured on."""
    from mmesid_cli.artifacts.reports import read_report

    report = read_report(path, kind="evaluate")
    metrics = report.get("metrics") or {}
    protocol = report.get("protocol") or {}
    if not isinstance(metrics, dict) or not isinstance(metrics.get(METRIC), (int, float)):
        raise UserError(f"has no {METRIC} (evaluate with a --k that includes 10)", path=path)
    users = protocol.get("users") if isinstance(protocol, dict) else None
    split = protocol.get("split") if isinstance(protocol, dict) else None
    return Baseline(
        label=label,
        ndcg10=float(metrics[METRIC]),
        split=str(split or "unknown split"),
        source=str(path),
        users=None if users is None else int(users),
    )


def popularity_ndcg10(
    sequences: str | os.PathLike[str], item_ids: Sequence[str], eval_users: int | None, seed: int
) -> tuple[float, int]:
    """Validation NDCG@10 of the popularity ranking and the number of users it was taken on.

    The users are those :func:`mmesid_cli.llm4sr.train.validation_cases` picks for a run with
    these sequences, ``eval_users`` and ``seed``; the catalogue is the run's ``item_ids``.
    """
    from types import SimpleNamespace

    from mmesid_cli.data.records import ItemTable, read_sequences
    from mmesid_cli.evaluation import popularity_scorer
    from mmesid_cli.llm4sr.train import validation_cases
    from mmesid_cli.metrics import metrics_from_ranks, rank_targets

    items = ItemTable(records=[{"item_id": i} for i in item_ids])
    table = read_sequences(sequences, items)
    cases = validation_cases(SimpleNamespace(sequences=table), eval_users, seed)  # type: ignore[arg-type]
    if not cases:
        raise UserError("no user has the 3 items a leave-one-out split needs", path=sequences)
    ranks = rank_targets(
        popularity_scorer(table), [c.history for c in cases], [c.target for c in cases]
    )
    return metrics_from_ranks(ranks, (10,))[METRIC], len(cases)


def popularity_baselines(
    curves: Sequence[RunCurve], sequences: str | os.PathLike[str] | None = None
) -> list[Baseline]:
    """The popularity baseline on each distinct validation setting of ``curves``.

    A setting is (sequences file, eval_users, seed, catalogue); runs that share one share a
    line. ``sequences`` replaces the file every run config names (e.g. when the runs were
    trained from another working directory).
    """
    groups: dict[tuple, list[RunCurve]] = {}
    for curve in curves:
        path = str(sequences) if sequences is not None else curve.sequences
        if path is None:
            raise UserError(
                "names no sequences file (inputs.sequences); pass --sequences", path=curve.run_dir
            )
        if not Path(path).is_file():
            raise UserError(
                f"run {curve.label!r} was trained on {path}, which is not found here; "
                "pass --sequences",
                path=curve.run_dir / CONFIG,
            )
        if not curve.item_ids:
            raise UserError(f"{CONFIG} records no item_ids (the catalogue)", path=curve.run_dir)
        key = (path, curve.eval_users, curve.seed, tuple(curve.item_ids))
        groups.setdefault(key, []).append(curve)
    baselines = []
    for (path, eval_users, seed, item_ids), runs in groups.items():
        value, users = popularity_ndcg10(path, item_ids, eval_users, seed)
        for run in runs:
            if run.users is not None and run.users != users:
                raise UserError(
                    f"run {run.label!r} was validated on {run.users:,} users, but {path} with "
                    f"eval_users {eval_users} and seed {seed} gives {users:,}: is it the "
                    "sequences file the run was trained on?",
                    path=run.run_dir / TRAIN_LOG,
                )
        label = "popularity"
        if len(groups) > 1:
            label += f" [{', '.join(r.label for r in runs)}]"
        source = f"training-part interaction counts of {path}"
        baselines.append(Baseline(label, value, "valid", source, users))
    return baselines


def curve_notes(curves: Sequence[RunCurve], baselines: Sequence[Baseline]) -> list[str]:
    """What a reader needs to compare the lines: estimated labels, users, splits."""
    notes = []
    for curve in curves:
        if curve.estimated:
            notes.append(
                f"{curve.label}: labels seen = step × batch_size ({curve.batch_size}) at "
                f"{len(curve.estimated)} of {len(curve.points)} points: its {TRAIN_LOG} "
                "records no 'labels' there."
            )
    settings: dict[tuple, list[str]] = {}
    for curve in curves:
        settings.setdefault((curve.users, curve.eval_users, curve.seed), []).append(curve.label)
    for (users, eval_users, seed), runs in settings.items():
        who = "every run" if len(settings) == 1 else ", ".join(runs)
        sample = "all eligible users" if eval_users is None else f"eval_users {eval_users}"
        shown = "?" if users is None else f"{users:,}"
        notes.append(f"Validation NDCG@10 on {shown} users ({sample}, seed {seed}): {who}.")
    for baseline in baselines:
        if baseline.source.startswith("training-part interaction counts"):
            users = "?" if baseline.users is None else f"{baseline.users:,}"
            notes.append(
                f"{baseline.label}: {baseline.source}, ranked on the runs' own {users} "
                "validation users."
            )
        elif baseline.split != "valid":
            notes.append(
                f"{baseline.label}: a {baseline.split}-split figure ({baseline.source}); beside "
                "validation curves it shows a level, not a gap."
            )
        else:
            notes.append(
                f"{baseline.label}: validation figure of {baseline.source}; its users may "
                "differ from the runs' validation sample."
            )
    return notes


def curve_report(
    curves: Sequence[RunCurve], baselines: Sequence[Baseline], log_x: bool = False
) -> dict[str, object]:
    """The content of a ``curve`` report (:mod:`mmesid_cli.artifacts.reports`)."""
    return {
        "metric": METRIC,
        "split": "valid",
        "x": "training labels seen",
        "runs": [c.as_dict() for c in curves],
        "baselines": [b.as_dict() for b in baselines],
        "notes": curve_notes(curves, baselines),
        "settings": {"log_x": log_x},
    }


# ---------------------------------------------------------------------------------------------
# Drawing


def require_matplotlib(path: str | os.PathLike[str] | None = None) -> None:
    """Fail before any work if the plot cannot be drawn: bad suffix or no matplotlib."""
    if path is not None and Path(path).suffix.lower().lstrip(".") not in PLOT_FORMATS:
        raise UserError(f"plot format must be one of {', '.join(PLOT_FORMATS)}", path=path)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError(
            "drawing learning curves needs matplotlib: pip install matplotlib "
            "(or pip install 'mmesid[plots]')",
            path=path,
        ) from None


def draw_curves(
    curves: Sequence[RunCurve],
    baselines: Sequence[Baseline] = (),
    log_x: bool = False,
    title: str | None = None,
):
    """A matplotlib figure: one line with markers per run, a dashed line per baseline.

    Runs whose labels are partly step × batch_size carry a * in the legend. ``log_x`` uses a
    symmetric log axis, so the labels = 0 point (before training) stays on it.
    """
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    figure, axes = plt.subplots(figsize=(8, 5))
    for i, curve in enumerate(curves):
        x = [p.labels for p in curve.points]
        y = [p.ndcg10 for p in curve.points]
        name = curve.label + ("*" if curve.estimated else "")
        if curve.objective:
            name += f" [{curve.objective}]"
        axes.plot(x, y, marker="o", markersize=4, color=f"C{i % 10}", label=name)
    for j, baseline in enumerate(baselines):
        axes.axhline(
            baseline.ndcg10,
            color=f"C{(len(curves) + j) % 10}",
            linestyle="--",
            linewidth=1.2,
            label=f"{baseline.legend}: {baseline.ndcg10:.4f}",
        )
    if log_x:
        positive = [p.labels for c in curves for p in c.points if p.labels > 0]
        axes.set_xscale("symlog", linthresh=min(positive, default=1))
    else:
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    xlabel = "training labels seen"
    if any(c.estimated for c in curves):
        xlabel += " (*: step × batch size)"
    axes.set_xlabel(xlabel)
    axes.set_ylabel(f"validation {METRIC}")
    axes.set_title(title or f"Learning curves: validation {METRIC} against labels seen")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def render_curves(
    curves: Sequence[RunCurve],
    baselines: Sequence[Baseline] = (),
    fmt: str = "png",
    log_x: bool = False,
    title: str | None = None,
) -> bytes:
    """:func:`draw_curves` rendered in memory as ``fmt`` (png, pdf or svg)."""
    figure = draw_curves(curves, baselines, log_x, title)  # checks for matplotlib first
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def plot_curves(
    path: str | os.PathLike[str],
    curves: Sequence[RunCurve],
    baselines: Sequence[Baseline] = (),
    log_x: bool = False,
    title: str | None = None,
) -> None:
    """Draw the curves into ``path`` (.png, .pdf or .svg), written atomically."""
    from mmesid_cli.artifacts.atomic import write_bytes_atomic

    require_matplotlib(path)
    fmt = Path(path).suffix.lower().lstrip(".")
    write_bytes_atomic(path, render_curves(curves, baselines, fmt, log_x, title))
