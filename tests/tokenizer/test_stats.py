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


def test_build_sids_encodes_measures_and_records_collisions() -> None:
    import torch

    from mmesid_cli.tokenizer.quantizer import nearest_codes
    from mmesid_cli.tokenizer.stats import build_sids
    from mmesid_cli.tokenizer.train import build_model
    from tests.tokenizer.test_train import tiny_config, tiny_inputs

    data = tiny_inputs(n=20)
    model = build_model(tiny_config(), data.dims()).eval()
    ids = [f"I{i}" for i in range(20)]
    sids, figures = build_sids(model, data, ids, ["text"], dedup="suffix", file_attrs={"a": 1})
    # Independent: the residual nearest-code search, level by level.
    residual = model.latent("text", torch.from_numpy(data.inputs["text"]))
    expected = []
    for book in model.codebooks("text"):
        codes = nearest_codes(residual, book)
        expected.append(codes.numpy())
        residual = residual - book[codes]
    expected = np.stack(expected, axis=1)
    np.testing.assert_array_equal(sids.codes["text"][:, :-1], expected)
    np.testing.assert_array_equal(sids.codes["text"], dedup_suffix(expected))
    assert sids.item_ids == ids and sids.file_attrs == {"a": 1}
    collisions = collision_stats(expected)
    assert sids.attrs["text"]["collision_rate"] == collisions["collision_rate"]
    assert sids.attrs["text"]["dedup"] == "suffix" and figures["text"]["items_without_input"] == 0
    with pytest.raises(ValueError, match="dedup"):
        build_sids(model, data, ids, ["text"], dedup="prefix")
