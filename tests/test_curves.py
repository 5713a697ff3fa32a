"""Learning curves: points from train_log.jsonl, baselines, the popularity line, the figure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mmesid_cli.artifacts.reports import write_report
from mmesid_cli.artifacts.runs import TrainingLog, write_run_config
from mmesid_cli.curves import (
    Point,
    draw_curves,
    popularity_baselines,
    read_curves,
    read_run_curve,
    render_curves,
    report_baseline,
)
from mmesid_cli.errors import UserError

ITEMS = [f"I{i:02d}" for i in range(16)]  # I15 is in no sequence: a frequency-0 candidate


def write_sequences(path: Path, n_users: int = 14, seed: int = 0) -> list[list[str]]:
    """Skewed item choices (so ranks spread around K = 10) and one user too short to split."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, 16)
    sequences = [
        [ITEMS[i] for i in rng.choice(15, size=int(rng.integers(3, 8)), p=weights / weights.sum())]
        for _ in range(n_users)
    ]
    sequences.append(["I00", "I01"])
    with open(path, "w", encoding="utf-8") as handle:
        for u, seq in enumerate(sequences):
            handle.write(json.dumps({"user_id": f"U{u}", "items": seq}) + "\n")
    return sequences


def make_run(
    folder: Path,
    sequences: Path,
    *,
    labels: bool = True,
    valid_labels: bool | None = None,
    batch_size: int = 4,
    eval_users: int | None = None,
    seed: int = 0,
    users: int = 14,
    objective: str | None = None,
    validations: dict[int, float] | None = None,
) -> Path:
    """config.json through the project's writer, train_log.jsonl as a run appends it."""
    validations = {0: 0.01, 5: 0.06, 10: 0.04} if validations is None else validations
    valid_labels = labels if valid_labels is None else valid_labels
    training = {"batch_size": batch_size, "eval_users": eval_users, "seed": seed}
    if objective is not None:
        training["objective"] = objective
    folder.mkdir(parents=True)
    write_run_config(
        folder / "config.json",
        {
            "model": {"sid_init": "codebook"},
            "training": training,
            "item_ids": ITEMS,
            "inputs": {"sequences": str(sequences)},
            "summary": {},
        },
    )
    log = TrainingLog(folder / "train_log.jsonl")

    def validate(step: int) -> None:
        record = {"step": step, "valid": {"NDCG@10": validations[step], "HR@10": 0.1}}
        if valid_labels:
            record["labels"] = 7 * step
        log.append({**record, "users": users, "seconds": 0.1})

    if 0 in validations:
        validate(0)
    for step in range(1, 11):
        record = {"step": step, "epoch": 0, "loss": 5.0 - 0.1 * step, "lr": 1e-3}
        if labels:
            record["labels"] = 7 * step  # 7 labels a step: not step × batch_size
        log.append({**record, "samples_per_s": 3.0})
        if step in validations:
            validate(step)
    return folder


@pytest.fixture
def sequences(tmp_path: Path) -> Path:
    path = tmp_path / "sequences.jsonl"
    write_sequences(path)
    return path


def test_points_come_from_the_logged_labels(tmp_path: Path, sequences: Path) -> None:
    curve = read_run_curve(make_run(tmp_path / "run", sequences, objective="all-positions"))
    assert curve.points == [Point(0, 0, 0.01), Point(35, 5, 0.06), Point(70, 10, 0.04)]
    assert curve.best == Point(35, 5, 0.06)
    assert curve.final_loss == pytest.approx(4.0) and curve.final_step == 10
    assert curve.objective == "all-positions" and curve.estimated == []
    assert curve.label == "run" and curve.users == 14


def test_labels_missing_fall_back_to_step_times_batch(tmp_path: Path, sequences: Path) -> None:
    old = read_run_curve(make_run(tmp_path / "old", sequences, labels=False, batch_size=4))
    assert old.points == [Point(0, 0, 0.01), Point(20, 5, 0.06), Point(40, 10, 0.04)]
    assert old.estimated == [5, 10] and old.objective is None
    assert old.as_dict()["labels_from"] == "step × batch_size"
    # validation records without labels take them from the step record of the same step
    mixed = read_run_curve(make_run(tmp_path / "mixed", sequences, valid_labels=False))
    assert [p.labels for p in mixed.points] == [0, 35, 70] and mixed.estimated == []


def test_labels_default_to_folder_names_unless_they_clash(tmp_path: Path, sequences: Path) -> None:
    a = make_run(tmp_path / "a" / "run", sequences)
    b = make_run(tmp_path / "b" / "run", sequences)
    assert [c.label for c in read_curves([a, b])] == [str(a), str(b)]
    assert [c.label for c in read_curves([a, b], ["A", "B"])] == ["A", "B"]
    with pytest.raises(UserError, match="1 labels for 2 runs"):
        read_curves([a, b], ["A"])


def test_bad_runs_are_user_errors(tmp_path: Path, sequences: Path) -> None:
    with pytest.raises(UserError, match="run directory not found"):
        read_run_curve(tmp_path / "absent")
    run = make_run(tmp_path / "run", sequences)
    (run / "train_log.jsonl").unlink()
    with pytest.raises(UserError, match="has no train_log.jsonl"):
        read_run_curve(run)
    quiet = make_run(tmp_path / "quiet", sequences, validations={})
    with pytest.raises(UserError, match="no validation records"):
        read_run_curve(quiet)


def brute_force_ndcg10(sequences: list[list[str]], users: list[int]) -> float:
    """Popularity by counting the training parts by hand; rank = candidates scored ≥ target."""
    count = dict.fromkeys(ITEMS, 0)
    for seq in sequences:
        if len(seq) >= 3:
            for item in seq[:-2]:
                count[item] += 1
    gains = []
    for u in users:
        history, target = sequences[u][:-2], sequences[u][-2]
        masked = set(history) - {target}
        rank = sum(
            1 for i in ITEMS if i != target and i not in masked and count[i] >= count[target]
        )
        gains.append(1 / math.log2(rank + 2) if rank < 10 else 0.0)
    return sum(gains) / len(gains)


def test_popularity_is_ranked_on_the_runs_validation_users(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from mmesid_cli.data.records import ItemTable, read_sequences
    from mmesid_cli.llm4sr.train import validation_cases

    path = tmp_path / "sequences.jsonl"
    raw = write_sequences(path)
    everyone = read_run_curve(make_run(tmp_path / "all", path))
    (line,) = popularity_baselines([everyone])
    assert line.label == "popularity" and line.split == "valid" and line.users == 14
    assert line.ndcg10 == pytest.approx(brute_force_ndcg10(raw, list(range(14))))
    assert 0 < line.ndcg10 < 1

    # a seeded subset: the users training validated on (its own rule picks them)
    table = read_sequences(path, ItemTable([{"item_id": i} for i in ITEMS]))
    picked = [c.user for c in validation_cases(SimpleNamespace(sequences=table), 5, 3)]
    subset = read_run_curve(make_run(tmp_path / "sub", path, eval_users=5, seed=3, users=5))
    twice = read_run_curve(make_run(tmp_path / "sub2", path, eval_users=5, seed=3, users=5))
    lines = popularity_baselines([everyone, subset, twice])
    assert [b.label for b in lines] == ["popularity [all]", "popularity [sub, sub2]"]
    assert len(picked) == 5 and lines[1].users == 5
    assert lines[1].ndcg10 == pytest.approx(brute_force_ndcg10(raw, picked))


def test_popularity_refuses_a_different_user_count(tmp_path: Path, sequences: Path) -> None:
    run = read_run_curve(make_run(tmp_path / "run", sequences, users=99))
    with pytest.raises(UserError, match="validated on 99 users"):
        popularity_baselines([run])
    moved = read_run_curve(make_run(tmp_path / "moved", tmp_path / "gone.jsonl"))
    with pytest.raises(UserError, match="pass --sequences"):
        popularity_baselines([moved])
    assert popularity_baselines([moved], sequences)[0].users == 14


def test_report_baseline_keeps_its_split(tmp_path: Path) -> None:
    path = tmp_path / "sasrec.json"
    protocol = {"split": "test", "users": 14}
    write_report(path, "evaluate", {"metrics": {"NDCG@10": 0.03}, "protocol": protocol})
    line = report_baseline("sasrec", path)
    assert (line.ndcg10, line.split, line.legend) == (0.03, "test", "sasrec (test)")
    write_report(path, "evaluate", {"metrics": {"NDCG@5": 0.03}, "protocol": protocol})
    with pytest.raises(UserError, match="has no NDCG@10"):
        report_baseline("sasrec", path)


def test_figure_has_a_line_per_run_and_per_baseline(tmp_path: Path, sequences: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib (the 'plots' extra) is not installed")
    import matplotlib.pyplot as plt

    runs = [
        read_run_curve(make_run(tmp_path / "new", sequences, objective="last")),
        read_run_curve(make_run(tmp_path / "old", sequences, labels=False)),
    ]
    path = tmp_path / "sasrec.json"
    write_report(path, "evaluate", {"metrics": {"NDCG@10": 0.03}, "protocol": {"split": "test"}})
    lines = [report_baseline("sasrec", path)]
    figure = draw_curves(runs, lines, log_x=True)
    axes = figure.axes[0]
    legend = [t.get_text() for t in axes.get_legend().get_texts()]
    assert legend == ["new [last]", "old*", "sasrec (test): 0.0300"]
    assert list(axes.lines[1].get_xdata()) == [0, 20, 40]
    assert axes.lines[2].get_linestyle() == "--"
    assert axes.get_ylabel() == "validation NDCG@10" and "*" in axes.get_xlabel()
    plt.close(figure)
    assert render_curves(runs, lines, "png").startswith(b"\x89PNG\r\n\x1a\n")
