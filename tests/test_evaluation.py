"""`evaluate` against a brute-force per-user loop; popularity against a closed-form count."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mmesid_cli.data.records import read_items, read_sequences
from mmesid_cli.data.split import eval_cases
from mmesid_cli.evaluation import evaluate_scorer, popularity_scorer
from tests.conftest import run_cli


def _brute_force(scores_of, cases, ks):
    """Per user: walk every item, count those ranked at or above the target."""
    hr = {k: 0.0 for k in ks}
    ndcg = {k: 0.0 for k in ks}
    for case in cases:
        scores = scores_of(case.history)
        hist = {int(h) for h in case.history} - {case.target}
        above = sum(
            1
            for j in range(len(scores))
            if j != case.target and j not in hist and scores[j] >= scores[case.target]
        )
        for k in ks:
            if above < k:
                hr[k] += 1
                ndcg[k] += 1 / math.log2(above + 2)
    n = len(cases)
    return {**{f"HR@{k}": hr[k] / n for k in ks}, **{f"NDCG@{k}": ndcg[k] / n for k in ks}}


def test_evaluate_matches_brute_force_with_ties(tiny_dataset) -> None:
    items_path, seq_path = tiny_dataset
    seqs = read_sequences(seq_path, read_items(items_path))
    n = seqs.n_items
    table = torch.from_numpy(
        np.random.default_rng(3).integers(0, 4, size=(n, n)).astype(np.float32)
    )  # many ties

    def score_fn(histories):
        return torch.stack([table[h[-1]] for h in histories])

    result = evaluate_scorer(score_fn, seqs, "test", ks=(1, 5, 10), batch_size=7)
    expected = _brute_force(lambda h: table[h[-1]].tolist(), eval_cases(seqs, "test"), (1, 5, 10))
    for key, value in expected.items():
        assert result.metrics[key] == pytest.approx(value, abs=1e-12), key


def test_popularity_equals_closed_form_count(tiny_dataset) -> None:
    items_path, seq_path = tiny_dataset
    seqs = read_sequences(seq_path, read_items(items_path))
    result = evaluate_scorer(popularity_scorer(seqs), seqs, "valid", ks=(10,))
    # closed form: count the training-part interactions, then for each user the number of
    # unmasked items at least as popular as the target
    freq = np.zeros(seqs.n_items)
    for seq in seqs.items:
        for item in seq[:-2]:
            freq[item] += 1
    ranks = []
    for seq in seqs.items:
        target, history = seq[-2], set(seq[:-2].tolist()) - {int(seq[-2])}
        ranks.append(
            sum(
                1
                for j in range(seqs.n_items)
                if j != target and j not in history and freq[j] >= freq[target]
            )
        )
    np.testing.assert_array_equal(result.ranks, ranks)
    assert result.metrics["HR@10"] == pytest.approx(np.mean(np.array(ranks) < 10))


def test_cli_popularity_report_and_compare(tiny_dataset, tmp_path: Path, capsys) -> None:
    items_path, seq_path = tiny_dataset
    out = tmp_path / "pop.json"
    per_user = tmp_path / "ranks.jsonl"
    code = run_cli(
        "evaluate",
        "--baseline",
        "popularity",
        "--sequences",
        seq_path,
        "--items",
        items_path,
        "--json",
        out,
        "--per-user",
        per_user,
        "--k",
        "5,10",
        "--threads",
        "1",
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["kind"] == "evaluate" and report["protocol"]["users"] == 40
    assert report["environment"]["threads"] == 1
    assert set(report["metrics"]) == {f"{m}@{k}" for m in ("HR", "NDCG", "MRR") for k in (5, 10)}
    ranks = [json.loads(line) for line in per_user.read_text().splitlines()]
    assert len(ranks) == 40 and {"user_id", "target", "rank"} <= set(ranks[0])
    hit = np.mean([r["rank"] < 10 for r in ranks])
    assert report["metrics"]["HR@10"] == pytest.approx(hit)
    md = tmp_path / "table.md"
    assert run_cli("report", out, out, "--markdown", md, "--k", "10") == 0
    assert md.read_text().count("| popularity |") == 2


def test_cli_needs_run_or_baseline(tiny_dataset, tmp_path: Path, capsys) -> None:
    items_path, seq_path = tiny_dataset
    assert run_cli("evaluate", "--sequences", seq_path, "--items", items_path) == 2
    assert "either a RUN_DIR or --baseline" in capsys.readouterr().err


def test_user_subset_is_seeded_and_recorded(tiny_dataset) -> None:
    items_path, seq_path = tiny_dataset
    seqs = read_sequences(seq_path, read_items(items_path))
    full = evaluate_scorer(popularity_scorer(seqs), seqs, "test", ks=(10,))
    a = evaluate_scorer(popularity_scorer(seqs), seqs, "test", ks=(10,), max_users=15, seed=1)
    b = evaluate_scorer(popularity_scorer(seqs), seqs, "test", ks=(10,), max_users=15, seed=1)
    assert a.users == b.users and len(a.users) == 15 and len(set(a.users)) == 15
    assert a.protocol["user_sample"] == {"size": 15, "seed": 1}
    assert a.protocol["users_eligible"] == 40
    # the subset's ranks are the full run's ranks of those users
    by_user = dict(zip(full.users, full.ranks, strict=True))
    assert [by_user[u] for u in a.users] == a.ranks.tolist()
