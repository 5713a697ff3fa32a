"""The SASRec model: causality, padding, truncation, the exact chunked softmax, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmesid_cli.artifacts.weights import write_weights
from mmesid_cli.encoders.collab import full_softmax_cross_entropy
from mmesid_cli.encoders.sasrec import SASRec, SASRecConfig, load_sasrec, save_sasrec
from mmesid_cli.errors import UserError


def _model(n_items: int = 20, seed: int = 0, **kw) -> SASRec:
    torch.manual_seed(seed)
    config = SASRecConfig(n_items=n_items, dim=16, n_blocks=2, n_heads=2, max_len=8, **kw)
    return SASRec(config).eval()


def test_defaults_are_the_reference_settings() -> None:
    c = SASRecConfig(n_items=1)
    assert (c.dim, c.n_blocks, c.n_heads, c.max_len, c.dropout) == (64, 2, 1, 50, 0.5)


def test_a_position_never_sees_later_items() -> None:
    model = _model()
    tokens = torch.tensor([[0, 0, 3, 4, 5, 6]])
    changed = tokens.clone()
    changed[0, 4:] = torch.tensor([9, 10])
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_padding_does_not_leak_into_scores() -> None:
    """A history scores the same alone and batched beside longer ones (more left padding)."""
    model = _model()
    short = np.array([3, 1])
    alone = model.score([short])
    batched = model.score([np.array([0, 1, 2, 3, 4, 5, 6]), short, np.array([7])])
    torch.testing.assert_close(alone[0], batched[1], rtol=1e-5, atol=1e-5)
    assert alone.shape == (1, 20)


def test_only_the_last_max_len_items_count() -> None:
    model = _model()
    long = np.arange(15) % 20
    torch.testing.assert_close(model.score([long]), model.score([long[-8:]]))


def test_score_is_the_last_hidden_state_times_the_item_table() -> None:
    model = _model()
    history = np.array([4, 2, 9])
    with torch.no_grad():
        hidden = model(torch.tensor([[5, 3, 10]]))[0, -1]  # rows + 1 = token ids
        expected = torch.stack([hidden @ model.item_emb.weight[j + 1] for j in range(20)])
    torch.testing.assert_close(model.score([history])[0], expected, rtol=1e-5, atol=1e-5)


def test_score_ignores_training_mode() -> None:
    model = _model(dropout=0.5).train()
    h = [np.array([1, 2, 3])]
    torch.testing.assert_close(model.score(h), model.score(h))
    assert model.training  # restored


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_chunked_softmax_equals_plain_cross_entropy(chunk: int) -> None:
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(23, 8, generator=gen, requires_grad=True)
    table = torch.randn(31, 8, generator=gen, requires_grad=True)
    y = torch.randint(0, 31, (23,), generator=gen)
    plain = F.cross_entropy(h @ table.T, y)
    g_plain = torch.autograd.grad(plain, (h, table))
    fused = full_softmax_cross_entropy(h, table, y, chunk=chunk)
    g_fused = torch.autograd.grad(fused * 3.0, (h, table))  # an upstream factor passes through
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_fused, g_plain, strict=True):
        torch.testing.assert_close(a, 3.0 * b, rtol=1e-4, atol=1e-6)


def test_checkpoint_round_trip_and_catalogue_check(tmp_path) -> None:
    model = _model()
    ids = [f"i{j}" for j in range(20)]
    path = tmp_path / "sasrec.safetensors"
    save_sasrec(path, model, ids)
    loaded = load_sasrec(path, item_ids=ids)
    histories = [np.array([1, 2]), np.array([5, 6, 7, 8])]
    torch.testing.assert_close(loaded.score(histories), model.score(histories))
    assert loaded.config == model.config and not loaded.training
    with pytest.raises(UserError, match="other item ids"):
        load_sasrec(path, item_ids=ids[::-1])
    with pytest.raises(UserError, match="trained on 20 items"):
        load_sasrec(path, item_ids=ids[:5])


def test_a_checkpoint_of_another_kind_or_shape_is_a_user_error(tmp_path) -> None:
    other = tmp_path / "tok.safetensors"
    write_weights(other, {"x": torch.zeros(2)}, kind="tokenizer", config={})
    with pytest.raises(UserError, match="mmesid.sasrec"):
        load_sasrec(other)
    bad = tmp_path / "bad.safetensors"
    config = {"model": {"n_items": 20, "dim": 16, "n_heads": 2, "max_len": 8}}
    write_weights(bad, {"item_emb.weight": torch.zeros(21, 16)}, kind="sasrec", config=config)
    with pytest.raises(UserError, match="do not fit"):
        load_sasrec(bad)


def test_tokens_are_the_last_items_right_aligned_as_a_loop_writes_them() -> None:
    model = SASRec(SASRecConfig(n_items=100, max_len=5))
    rng = np.random.default_rng(0)
    for _ in range(100):
        histories = [rng.integers(0, 100, rng.integers(0, 9)) for _ in range(rng.integers(1, 6))]
        cut = [h[-5:] for h in histories]
        width = max(1, max(len(h) for h in cut))
        expected = np.zeros((len(cut), width), dtype=np.int64)
        for row, h in enumerate(cut):
            if len(h):
                expected[row, width - len(h) :] = h + 1
        np.testing.assert_array_equal(model.tokens_from_histories(histories).numpy(), expected)


def test_last_query_scoring_equals_the_full_forward() -> None:
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=300, max_len=20)).eval()
    rng = np.random.default_rng(1)
    histories = [rng.integers(0, 300, rng.integers(1, 25)) for _ in range(40)]
    with torch.no_grad():
        full = model.logits(model(model.tokens_from_histories(histories))[:, -1])
        assert torch.allclose(model.score(histories), full, atol=1e-5)
