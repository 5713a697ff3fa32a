"""SID statistics against hand-computed values and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import entropy

from mmesid_cli.tokenizer.stats import collision_stats, dedup_suffix, level_stats


def test_level_stats_usage_perplexity_and_dead_codes() -> None:
    codes = np.array([[0, 1], [0, 2], [1, 2], [3, 2]])
    first, second = level_stats(codes, codebook_size=5)
    assert (first["used"], first["dead"], first["usage"]) == (3, 2, 0.6)
    assert first["perplexity"] == pytest.approx(np.exp(entropy([2, 1, 1])))
    assert (second["used"], second["dead"]) == (2, 3)
    assert second["perplexity"] == pytest.approx(np.exp(entropy([1, 3])))


def test_collision_stats() -> None:
    codes = np.array([[0, 1], [0, 1], [0, 1], [2, 2], [2, 2], [3, 0]])
    s = collision_stats(codes)
    assert s["unique_sids"] == 3
    assert s["unique_sid_fraction"] == pytest.approx(3 / 6)
    assert s["collision_rate"] == pytest.approx(3 / 6)
    assert s["largest_collision_group"] == 3
    assert s["colliding_items"] == 5


def test_dedup_suffix_makes_every_sid_unique_and_keeps_the_codes() -> None:
    codes = np.array([[1, 1], [0, 2], [1, 1], [1, 1], [0, 2], [5, 5]])
    out = dedup_suffix(codes)
    assert out.shape == (6, 3)
    assert np.array_equal(out[:, :2], codes)
    assert out[:, 2].tolist() == [0, 0, 1, 2, 1, 0]  # rank within the SID, in item order
    assert collision_stats(out)["collision_rate"] == 0.0
