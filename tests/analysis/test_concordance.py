"""Formula 9 against independent oracles: scipy's tau-b, brute-force pair counts, closed forms."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import kendalltau

from mmesid_cli.analysis.concordance import (
    Cases,
    ConcordanceConfig,
    PairCounts,
    RankOrder,
    _count,
    build_cases,
    codebooks_from_tensors,
    concordance,
    order_sets,
    pair_counts,
    popcount_sum,
    sid_space_tables,
    summarise,
)
from tests.analysis.tiny import dyadic_table, exact_codebooks, random_codebooks


def brute_force(a: np.ndarray, b: np.ndarray) -> dict[str, int]:
    """Count the pairs of one case with a plain double loop."""
    out = {"concordant": 0, "discordant": 0, "ties_a": 0, "ties_b": 0, "ties_both": 0}
    for k, m in itertools.combinations(range(len(a)), 2):
        da, db = a[k] - a[m], b[k] - b[m]
        out["concordant"] += int(da * db > 0)
        out["discordant"] += int(da * db < 0)
        out["ties_a"] += int(da == 0)
        out["ties_b"] += int(db == 0)
        out["ties_both"] += int(da == 0 and db == 0)
    return out


@pytest.mark.parametrize("n", [2, 3, 7, 12, 64, 65])  # 64: one-word path's edge; 65: sets
def test_pair_counts_match_brute_force_and_scipy_with_ties(n: int) -> None:
    rng = np.random.default_rng(n)
    # few distinct values: many ties in a, in b and in both, and some all-tied rows
    a = rng.integers(0, 4, size=(60, n)).astype(np.float64)
    b = rng.integers(0, 3, size=(60, n)).astype(np.float64)
    b[0] = 1.0  # every pair tied in b: tau-b undefined
    counts = pair_counts(a, b)
    tau_a, tau_b = counts.tau_a(), counts.tau_b()
    for row in range(a.shape[0]):
        oracle = brute_force(a[row], b[row])
        for key, value in oracle.items():
            assert getattr(counts, key)[row] == value, (row, key)
        assert tau_a[row] == pytest.approx(
            (oracle["concordant"] - oracle["discordant"]) / (n * (n - 1) / 2)
        )
        expected = kendalltau(a[row], b[row], variant="b").statistic
        if np.isnan(expected):
            assert np.isnan(tau_b[row])
        else:
            assert tau_b[row] == pytest.approx(expected, abs=1e-12)
    assert np.isnan(tau_b[0])


@pytest.mark.parametrize("n", [2, 5, 33, 63, 64])
def test_one_word_path_equals_the_bitset_path(n: int) -> None:
    """RankOrder (n <= 64) and OrderSets count the same pairs, ties and equal keys included."""
    rng = np.random.default_rng(100 + n)
    a = rng.integers(0, 6, size=(300, n)).astype(np.float32)
    b = rng.standard_normal((300, n)).astype(np.float32)
    b[:, ::3] = 0.5  # runs of ties in b
    a_keys = rng.integers(0, 4 * n, size=(300, n))
    b_keys = rng.integers(0, 2 * n, size=(300, n))
    fast = RankOrder.of(a, a_keys).count(RankOrder.of(b, b_keys))
    slow = _count(order_sets(a, a_keys), order_sets(b, b_keys))
    for key in ("n", "concordant", "discordant", "ties_a", "ties_b", "ties_both"):
        assert getattr(fast, key).tolist() == getattr(slow, key).tolist(), key


def test_long_histories_use_wider_ranks() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 200)), rng.standard_normal((2, 200))
    tau_b = pair_counts(a, b).tau_b()
    for row in range(2):
        assert tau_b[row] == pytest.approx(kendalltau(a[row], b[row]).statistic, abs=1e-12)


def _members(bitset: np.ndarray) -> list[int]:
    return [i for i in range(64 * bitset.size) if int(bitset[i // 64]) >> (i % 64) & 1]


def test_order_sets_list_the_smaller_items() -> None:
    values = np.array([[3.0, 1.0, 3.0, 2.0] + list(range(10, 76))])  # 70 items: two words
    sets = order_sets(values)
    assert _members(sets.less[0, 0]) == [1, 3] and _members(sets.less_equal[0, 0]) == [0, 1, 2, 3]
    assert _members(sets.less[0, 69]) == list(range(69))
    assert sets.tied.tolist() == [1]


def test_equal_keys_tie_values_that_differ_only_by_rounding() -> None:
    values = np.array([[1.0, 1.0 + 1e-7, 2.0, 0.5]])
    sets = order_sets(values, keys=np.array([[5, 5, 6, 7]]))
    assert sets.tied.tolist() == [1]
    assert _members(sets.less[0, 1]) == [3]  # item 0 is not below its twin
    assert order_sets(values).tied.tolist() == [0]  # without keys they are two values


def _oracle_taus(reference, other, cases, sim):
    """Per-case tau-a (brute force) and tau-b (scipy) from float64 similarities."""
    tau_a, tau_b = [], []
    for u in range(len(cases)):
        history, target = cases.history(u), cases.targets[u]
        sims = []
        for table in (reference, other):
            t = table.astype(np.float64)
            if sim == "cosine":
                t = t / np.linalg.norm(t, axis=1, keepdims=True)
            if sim == "neg-l2":
                sims.append(-np.linalg.norm(t[history] - t[target], axis=1))
            else:
                sims.append(t[history] @ t[target])
        counted = brute_force(*sims)
        n = len(history)
        tau_a.append((counted["concordant"] - counted["discordant"]) / (n * (n - 1) / 2))
        tau_b.append(kendalltau(*sims).statistic)
    return np.array(tau_a), np.array(tau_b)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("sim", ["cosine", "dot", "neg-l2"])
def test_driver_matches_oracle_over_mixed_lengths_and_duplicates(sim: str, workers: int) -> None:
    rng = np.random.default_rng(7)
    n_items = 40
    reference = rng.standard_normal((n_items, 5)).astype(np.float32)
    reference[1] = reference[0]  # identical items tie in every space
    other = rng.standard_normal((n_items, 3)).astype(np.float32)
    other[2:6] = other[2]  # a collision group, as items sharing a SID
    sequences = [
        rng.integers(0, 8 if u % 4 == 0 else n_items, rng.integers(3, 14)) for u in range(60)
    ]
    cases = build_cases(sequences, "all-positions")
    config = ConcordanceConfig(similarity=sim, workers=workers, chunk_bytes=20_000)
    counts = concordance(reference, {"other": other}, cases, config)
    tau_a, tau_b = _oracle_taus(reference, other, cases, sim)
    np.testing.assert_allclose(counts["other"].tau_a(), tau_a, atol=1e-12)
    np.testing.assert_allclose(counts["other"].tau_b(), tau_b, atol=1e-12)
    assert np.isnan(tau_b).sum() > 0  # the small-catalogue users produce all-tied cases


@pytest.mark.parametrize("workers", [1, 2])
def test_driver_matches_oracle_on_both_sides_of_the_one_word_limit(workers: int) -> None:
    """Histories of 62-69 items: the one-word path (<= 64) and the bitset path (> 64)."""
    rng = np.random.default_rng(8)
    n_items = 120
    reference = rng.standard_normal((n_items, 4)).astype(np.float32)
    other = rng.standard_normal((n_items, 3)).astype(np.float32)
    other[10:30] = other[10]  # ties
    sequences = [rng.integers(0, n_items, 63 + u % 8) for u in range(24)]
    cases = build_cases(sequences, "test")
    assert {int(n) for n in cases.lengths} == set(range(62, 70))
    config = ConcordanceConfig(workers=workers, chunk_bytes=50_000)
    counts = concordance(reference, {"other": other}, cases, config)
    tau_a, tau_b = _oracle_taus(reference, other, cases, "cosine")
    np.testing.assert_allclose(counts["other"].tau_a(), tau_a, atol=1e-12)
    np.testing.assert_allclose(counts["other"].tau_b(), tau_b, atol=1e-12)


def test_chunks_and_workers_do_not_change_counts() -> None:
    rng = np.random.default_rng(2)
    reference = rng.standard_normal((30, 4)).astype(np.float32)
    other = rng.standard_normal((30, 4)).astype(np.float32)
    sequences = [rng.integers(0, 30, rng.integers(3, 20)) for _ in range(50)]
    cases = build_cases(sequences, "all-positions")
    whole = concordance(reference, {"o": other}, cases)["o"]
    for config in (
        ConcordanceConfig(chunk_bytes=1),
        ConcordanceConfig(chunk_bytes=3000, workers=3),
    ):
        part = concordance(reference, {"o": other}, cases, config)["o"]
        for key in ("n", "concordant", "discordant", "ties_a", "ties_b", "ties_both"):
            np.testing.assert_array_equal(getattr(part, key), getattr(whole, key))


def test_exact_reproduction_gives_tau_one() -> None:
    n_items = 50
    table = dyadic_table(n_items, 6)
    books, codes = exact_codebooks(table)
    levels = sid_space_tables(books, codes)
    np.testing.assert_array_equal(levels[-1], table)  # the SID space is the table, bit for bit
    rng = np.random.default_rng(4)
    sequences = [rng.choice(n_items, size=rng.integers(4, 12), replace=False) for _ in range(200)]
    cases = build_cases(sequences, "test")
    counts = concordance(table, {"L1": levels[0], "L2": levels[1]}, cases)
    summary = summarise(counts, ConcordanceConfig(bootstrap=50))
    assert np.all(counts["L2"].tau_a() == 1.0)  # distinct random items: no ties, C = n0
    assert summary.spaces["L2"].tau_b.value == 1.0
    assert summary.spaces["L2"].concordant_fraction.value == 1.0
    assert summary.spaces["L1"].tau_a.value < 0.95  # the coarse level alone loses order


def test_random_codebook_gives_tau_near_zero() -> None:
    n_items = 300
    rng = np.random.default_rng(5)
    table = rng.standard_normal((n_items, 8)).astype(np.float32)
    books, codes = random_codebooks(n_items, 8, levels=3, size=64, seed=6)
    sequences = [rng.integers(0, n_items, size=12) for _ in range(3000)]
    cases = build_cases(sequences, "test")
    counts = concordance(table, {"random": sid_space_tables(books, codes)[-1]}, cases)
    summary = summarise(counts, ConcordanceConfig(bootstrap=200)).spaces["random"]
    # users share the 300 items, so for one fixed pair of random tables tau is O(1/sqrt(N))
    # away from 0, not exactly 0; a codebook that kept order would give tau near 1
    assert abs(summary.tau_a.value) < 0.03 and abs(summary.tau_b.value) < 0.03
    assert summary.tau_a.high - summary.tau_a.low < 0.03


def _loop_cases(sequences, target, min_history, max_history, present):
    """The cases by an explicit loop over users and positions."""
    out = []
    for user, seq in enumerate(sequences):
        if target == "all-positions":
            positions = range(1, len(seq))
        elif len(seq) < 3:
            continue
        else:
            positions = [len(seq) - (1 if target == "test" else 2)]
        for t in positions:
            if present is not None and not present[seq[t]]:
                continue
            history = [i for i in seq[:t] if present is None or present[i]]
            if max_history is not None:
                history = history[-max_history:]
            if len(history) >= min_history:
                out.append((user, int(seq[t]), history))
    return out


@pytest.mark.parametrize("target", ["test", "valid", "all-positions"])
@pytest.mark.parametrize("max_history", [None, 3])
@pytest.mark.parametrize("with_present", [False, True])
def test_build_cases_matches_a_loop(target, max_history, with_present) -> None:
    rng = np.random.default_rng(8)
    sequences = [rng.integers(0, 10, rng.integers(1, 9)) for _ in range(30)]
    present = rng.random(10) > 0.3 if with_present else None
    cases = build_cases(sequences, target, 2, max_history, present)
    got = [
        (int(cases.users[u]), int(cases.targets[u]), cases.history(u).tolist())
        for u in range(len(cases))
    ]
    assert got == _loop_cases(sequences, target, 2, max_history, present)
    assert len(got) > 0


def test_summarise_figures_and_paired_differences() -> None:
    counts = PairCounts(
        n=np.array([3, 4, 2, 3]),
        concordant=np.array([3, 2, 0, 1]),
        discordant=np.array([0, 3, 0, 1]),
        ties_a=np.array([0, 1, 1, 1]),
        ties_b=np.array([0, 0, 1, 0]),
        ties_both=np.array([0, 0, 1, 0]),
    )
    config = ConcordanceConfig(bootstrap=300, seed=3)
    summary = summarise({"x": counts, "same": counts}, config, baselines={"same": "x"})
    x = summary.spaces["x"]
    pairs = np.array([3, 6, 1, 3])
    assert x.tau_a.value == pytest.approx(np.mean((counts.concordant - counts.discordant) / pairs))
    defined = [1.0, -1 / np.sqrt(5 * 6), 0.0 / np.sqrt(2 * 3)]  # case 3: all tied in a and b
    assert x.tau_b.value == pytest.approx(np.mean(defined))
    assert x.tau_b_undefined == 1
    assert x.concordant_fraction.value == pytest.approx(6 / 13)
    assert x.tied_fraction == pytest.approx(1 - 10 / 13)
    assert x.tau_a.low <= x.tau_a.value <= x.tau_a.high
    delta = summary.differences["same"]["tau_a"]
    assert (delta.value, delta.low, delta.high) == (0.0, 0.0, 0.0)
    again = summarise({"x": counts}, config).spaces["x"]
    assert (again.tau_a.low, again.tau_a.high) == (x.tau_a.low, x.tau_a.high)  # seeded
    assert summarise({"x": counts}, ConcordanceConfig(bootstrap=0)).spaces["x"].tau_a.low is None


def test_sid_space_tables_are_prefix_sums() -> None:
    books, codes = random_codebooks(20, 3, levels=3, size=5)
    tables = sid_space_tables(books, codes)
    for item in range(20):
        total = np.zeros(3, dtype=np.float32)
        for level in range(3):
            total = total + books[level][codes[item, level]]
            np.testing.assert_allclose(tables[level][item], total, rtol=1e-6)
    with pytest.raises(ValueError, match="level 2"):
        sid_space_tables(books, np.where(np.arange(3) == 1, 5, codes))


def test_codebooks_from_tensors_reads_the_layout() -> None:
    tensors = {
        "codebook.text.2": np.ones((4, 3)),
        "codebook.text.1": np.zeros((4, 3)),
        "encoder.text.0.weight": np.ones((2, 2)),
    }
    books = codebooks_from_tensors(tensors)
    assert list(books) == ["text"] and [b[0, 0] for b in books["text"]] == [0.0, 1.0]
    with pytest.raises(ValueError, match="expected 1…L"):
        codebooks_from_tensors(
            {"codebook.text.1": np.ones((4, 3)), "codebook.text.3": np.ones((4, 3))}
        )
    with pytest.raises(ValueError, match="code dimension"):
        codebooks_from_tensors(
            {"codebook.text.1": np.ones((4, 3)), "codebook.text.2": np.ones((4, 2))}
        )


def test_config_rejects_bad_settings() -> None:
    for bad in ({"similarity": "l1"}, {"target": "train"}, {"min_history": 1}, {"confidence": 1.0}):
        with pytest.raises(ValueError):
            ConcordanceConfig(**bad)


def test_cases_from_arrays_round_trip() -> None:
    cases = Cases.from_arrays(np.array([[1, 2, 3], [4, 5, 6]]), np.array([7, 8]))
    assert cases.history(1).tolist() == [4, 5, 6] and cases.lengths.tolist() == [3, 3]


def test_bootstrap_resamples_whole_users() -> None:
    """Four identical cases per user are one draw: the interval is as wide as for one case."""
    rng = np.random.default_rng(11)
    n = np.full(400, 5)
    concordant = np.repeat(rng.integers(0, 11, 100), 4)
    counts = PairCounts(n, concordant, 10 - concordant, *(np.zeros(400, dtype=int),) * 3)
    config = ConcordanceConfig(bootstrap=400, seed=0)
    users = np.repeat(np.arange(100), 4)
    width = {}
    for name, groups in (("cases", None), ("users", users)):
        tau = summarise({"x": counts}, config, groups=groups).spaces["x"].tau_a
        width[name] = tau.high - tau.low
    assert 1.6 < width["users"] / width["cases"] < 2.4  # sqrt(4) = 2


def test_popcount_without_numpy_bitwise_count(monkeypatch) -> None:
    rng = np.random.default_rng(12)
    bitsets = rng.integers(0, 2**63, size=(5, 7, 2), dtype=np.uint64)
    expected = [sum(bin(int(v)).count("1") for v in row.reshape(-1)) for row in bitsets]
    assert popcount_sum(bitsets).tolist() == expected
    a, b = rng.standard_normal((2, 40, 20))
    counts = pair_counts(a, b)
    monkeypatch.delattr(np, "bitwise_count")
    assert popcount_sum(bitsets).tolist() == expected
    again = pair_counts(a, b)  # the one-word path's popcount too
    assert again.concordant.tolist() == counts.concordant.tolist()
    assert again.discordant.tolist() == counts.discordant.tolist()
