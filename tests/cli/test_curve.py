"""`mmesid curve` end to end: table, plot, JSON and Markdown; bad input writes nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mmesid_cli.artifacts.reports import read_report, write_report
from tests.conftest import run_cli
from tests.test_curves import make_run, write_sequences


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path, Path]:
    sequences = tmp_path / "sequences.jsonl"
    write_sequences(sequences)
    new = make_run(tmp_path / "new", sequences, objective="all-positions")
    old = make_run(tmp_path / "old", sequences, labels=False)
    sasrec = tmp_path / "sasrec.json"
    protocol = {"split": "test", "users": 14}
    write_report(sasrec, "evaluate", {"metrics": {"NDCG@10": 0.03}, "protocol": protocol})
    return new, old, sasrec


def test_curve_writes_plot_report_and_markdown(tmp_path: Path, runs, capsys) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib (the 'plots' extra) is not installed")
    new, old, sasrec = runs
    plot, report, md = tmp_path / "curve.png", tmp_path / "curve.json", tmp_path / "curve.md"
    code = run_cli(
        "curve", new, old, "--label", "A", "--label", "B", "--baseline", f"sasrec={sasrec}",
        "--popularity", "--plot", plot, "--json", report, "--markdown", md,
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "B: labels seen = step × batch_size (4) at 2 of 3 points" in printed
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    content = read_report(report, "curve")
    a, b = content["runs"]
    assert (a["label"], a["labels_from"], a["best"]) == ("A", "log", {"labels": 35, "step": 5,
                                                                      "NDCG@10": 0.06})  # fmt: skip
    assert [p["labels"] for p in b["points"]] == [0, 20, 40] and b["labels_from"] != "log"
    splits = {line["label"]: line["split"] for line in content["baselines"]}
    assert splits == {"sasrec": "test", "popularity": "valid"}
    assert content["inputs"]["baselines"] == {"sasrec": str(sasrec)}
    text = md.read_text()
    assert "| A | valid | all-positions | 3 | 0.0600 | 35 | 5 | 4.0000 |" in text
    assert "| baseline: sasrec | test |" in text

    combined = tmp_path / "report.md"
    assert run_cli("report", report, "--markdown", combined) == 0
    assert "## Learning curves" in combined.read_text()


def test_bad_input_exits_2_and_writes_nothing(tmp_path: Path, runs, capsys) -> None:
    new, old, sasrec = runs
    outputs = [tmp_path / "c.png", tmp_path / "c.json", tmp_path / "c.md"]
    written = ["--plot", outputs[0], "--json", outputs[1], "--markdown", outputs[2]]
    empty = tmp_path / "empty"
    empty.mkdir()
    no_log = make_run(tmp_path / "nolog", tmp_path / "sequences.jsonl")
    (no_log / "train_log.jsonl").unlink()
    quiet = make_run(tmp_path / "quiet", tmp_path / "sequences.jsonl", validations={})
    tokenize = tmp_path / "tok.json"
    write_report(tokenize, "tokenize", {})
    cases = [
        ([tmp_path / "absent"], "run directory not found"),
        ([empty], "not a finetune run"),
        ([no_log], "has no train_log.jsonl"),
        ([quiet], "no validation records"),
        ([new, "--baseline", "sasrec"], "--baseline must be LABEL=FILE"),
        ([new, "--baseline", f"={sasrec}"], "--baseline must be LABEL=FILE"),
        ([new, "--baseline", f"tok={tokenize}"], "is a 'tokenize' report"),
        ([new, old, "--label", "A"], "1 labels for 2 runs"),
    ]
    for args, message in cases:
        assert run_cli("curve", *args, *written) == 2, message
        assert message in capsys.readouterr().err
        assert not any(path.exists() for path in outputs), message
    assert run_cli("curve", new, "--plot", tmp_path / "c.jpg", *written[2:]) == 2
    assert "plot format must be one of" in capsys.readouterr().err
    assert not any(path.exists() for path in outputs)


def test_missing_matplotlib_names_the_install(tmp_path: Path, runs, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    new, _, _ = runs
    report, plot = tmp_path / "c.json", tmp_path / "c.png"
    assert run_cli("curve", new, "--json", report, "--plot", plot) == 2
    assert "pip install matplotlib" in capsys.readouterr().err
    assert not report.exists() and not plot.exists()
    assert run_cli("curve", new, "--json", report) == 0  # no plot asked: no matplotlib needed
