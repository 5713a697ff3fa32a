"""The model of method.md §5, checked against direct computations of its formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from mmesid_cli.llm4sr import (
    FrequencyAwareFusion,
    ItemTokens,
    ModelSpec,
    SIDEmbedding,
    build_model,
    frequency_feature,
    item_token_inputs,
    item_tokens,
    load_inputs,
    sid_tables,
)
from tests.llm4sr.tiny import HIDDEN, tiny_files

CPU = torch.device("cpu")


def _model(files, backbone, **spec):
    inputs = load_inputs(files.sequences, files.embeddings, files.tokenizer, files.sids)
    return build_model(ModelSpec(backbone=str(backbone), **spec), inputs, CPU).eval()


def test_codebook_init_gives_the_quantised_latent_at_step_0(files, llama_dir):
    model = _model(files, llama_dir)
    rows = torch.arange(len(files.item_ids))
    for m, books in files.codebooks.items():
        got = model.item_tokens.sids[m](rows).detach().numpy()
        for i in range(len(files.item_ids)):  # z_q(i) = Σ_l codebook_l[k_l(i)], item by item
            expected = sum(books[level][files.codes[m][i, level]] for level in range(len(books)))
            np.testing.assert_allclose(got[i], expected, rtol=1e-6, atol=1e-6)
        for level, table in enumerate(sid_tables(model)[m]):  # exported tables = codebooks
            np.testing.assert_array_equal(table.numpy(), books[level])


def test_codebook_dim_differs_from_hidden_adds_a_map_and_warns(tmp_path, llama_dir):
    files = tiny_files(tmp_path, e_dim=HIDDEN // 2)
    with pytest.warns(UserWarning, match="linear map 16 → 32"):
        model = _model(files, llama_dir)
    sid = model.item_tokens.sids["text"]
    rows = torch.arange(len(files.item_ids))
    books = files.codebooks["text"]
    z_q = sum(books[level][files.codes["text"][:, level]] for level in range(len(books)))
    np.testing.assert_allclose(sid.latent(rows).detach().numpy(), z_q, rtol=1e-6, atol=1e-6)
    projected = z_q @ sid.project.weight.detach().numpy().T
    np.testing.assert_allclose(sid(rows).detach().numpy(), projected, rtol=1e-5, atol=1e-5)
    # The exported tables are the ones the LLM sees: their level sum is S(i) exactly.
    used = sid_tables(model)["text"]
    assert used[0].shape == (8, HIDDEN)
    summed = sum(used[level].numpy()[files.codes["text"][:, level]] for level in range(2))
    np.testing.assert_allclose(summed, projected, rtol=1e-5, atol=1e-5)


def test_random_init_is_not_the_codebook(files, llama_dir):
    model = _model(files, llama_dir, sid_init="random")
    table = model.item_tokens.sids["collab"].tables[0].weight.detach().numpy()
    assert table.shape == (8, HIDDEN)
    assert not np.allclose(table, files.codebooks["collab"][0])
    assert table.std() == pytest.approx(
        np.concatenate(
            [c.ravel() for m in files.codebooks for c in files.codebooks[m] if m == "collab"]
        ).std(),
        rel=0.3,
    )


def _manual_item_token(builder: ItemTokens, i: int) -> torch.Tensor:
    parts = []
    for m in ("collab", "text"):  # the reference order [W_c e_c; S_c; ...; W_t e_t; S_t]
        w, b = builder.projections[m].weight, builder.projections[m].bias
        parts.append(F.linear(builder.embeddings[m][i], w, b))
        if builder.sids:
            sid = builder.sids[m]
            parts.append(sum(t.weight[sid.codes[i, level]] for level, t in enumerate(sid.tables)))
    first, last = builder.mlp[0], builder.mlp[2]
    hidden = torch.relu(F.linear(torch.cat(parts), first.weight, first.bias))
    return F.gelu(F.linear(hidden, last.weight, last.bias))


@pytest.mark.parametrize("with_sids", [True, False])
def test_item_token_is_gelu_mlp_of_projections_and_sids(with_sids):
    torch.manual_seed(0)
    n, h = 5, 6
    embeddings = {"text": torch.randn(n, 4), "collab": torch.randn(n, 3)}
    sids = None
    if with_sids:
        sids = {m: SIDEmbedding(torch.randint(0, 7, (n, 3)), 7, h, h) for m in embeddings}
    builder = ItemTokens(embeddings, h, sids=sids)
    assert builder.modalities == ["collab", "text"]
    width = 2 * h * (2 if with_sids else 1)
    assert (builder.mlp[0].in_features, builder.mlp[0].out_features) == (width, 2 * h)
    assert (builder.mlp[2].in_features, builder.mlp[2].out_features) == (2 * h, h)
    got = builder(torch.arange(n))
    for i in range(n):
        torch.testing.assert_close(got[i], _manual_item_token(builder, i))
    assert not any(p.requires_grad for p in builder.embeddings.values())  # e_m stay frozen


def test_frequency_feature_is_minmax_of_log1p():
    freq = np.array([0, 3, 10, 1, 10])
    logged = [math.log(1 + f) for f in freq]
    expected = [(v - min(logged)) / (max(logged) - min(logged)) for v in logged]
    np.testing.assert_allclose(frequency_feature(freq).numpy(), expected, rtol=1e-6)
    assert frequency_feature(np.array([4, 4, 4])).abs().sum() == 0


def test_fusion_scores_match_formula_17_item_by_item():
    torch.manual_seed(1)
    n, h, modalities = 7, 5, ["collab", "text"]
    freq = frequency_feature(np.array([0, 1, 2, 5, 9, 30, 100]))
    head = FrequencyAwareFusion(n, h, modalities, freq, fusion=True, temperature=0.5, head="paper")
    assert head.gate[-1].out_features == 3  # E_out + one head per present modality
    user = torch.randn(2, h)
    tables = {m: torch.randn(n, h) for m in modalities}
    got = head(user, {m: user @ tables[m].T for m in modalities})
    for j in range(n):
        w = torch.softmax(head.gate(freq[j : j + 1]) / 0.5, dim=-1)  # w_j from f_j alone
        heads = [head.out.weight[j], tables["collab"][j], tables["text"][j]]
        expected = sum(w[k] * (user @ heads[k]) for k in range(3))
        torch.testing.assert_close(got[:, j], expected, rtol=1e-5, atol=1e-6)
    plain = FrequencyAwareFusion(n, h, modalities, freq, fusion=False, head="paper")
    assert not hasattr(plain, "gate")
    torch.testing.assert_close(plain(user), user @ plain.out.weight.T)


def test_tied_scores_equal_inner_products_with_the_projected_items():
    torch.manual_seed(2)
    present = torch.tensor([1.0, 0.0, 1.0, 1.0])  # item 1 has no text input
    builder = ItemTokens({"text": torch.randn(4, 3)}, 5, present={"text": present})
    h = torch.randn(2, 5)
    expected = h @ builder.projected("text").T  # ⟨h, W e(j)⟩ from the N × H table
    torch.testing.assert_close(builder.inner_products("text", h), expected)
    assert (expected[:, 1] == 0).all()


def _randomise_heads(model, seed: int = 0) -> None:
    """Non-zero E_out and A_m, so scores depend on h (a fresh calibrated head does not)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in [model.head.out, *model.head.maps.values()]:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))


@pytest.mark.parametrize("objective", ["all-positions", "last"])
def test_padding_and_prefix_cache_do_not_change_scores(files, llama_dir, objective):
    model = _model(files, llama_dir, objective=objective)
    _randomise_heads(model)
    short, long = np.array([3, 7]), np.array([1, 2, 4, 5, 6, 8, 9])
    alone = model.score([short])
    padded = model.score([short, long])  # short is left padded by 5 here
    torch.testing.assert_close(padded[0], alone[0], rtol=1e-4, atol=1e-5)
    mixed = [long, short, long[:3], short[:1]]
    torch.testing.assert_close(  # chunks of similar lengths come back in the order given
        model.score(mixed, chunk=2), model.score(mixed, chunk=1), rtol=1e-4, atol=1e-5
    )
    torch.testing.assert_close(model.score(mixed)[1], alone[0], rtol=1e-4, atol=1e-5)
    model.prefix_cache = False  # one full sequence per user instead of a shared prefix
    torch.testing.assert_close(model.score([short, long]), padded, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(padded[0], padded[1])


def test_item_tokens_for_all_items(files, llama_dir):
    model = _model(files, llama_dir)
    tokens = item_tokens(model)
    assert tokens.shape == (30, HIDDEN)
    np.testing.assert_allclose(
        tokens[4], model.item_tokens(torch.tensor([4])).detach().numpy()[0], atol=1e-6
    )
    parts = item_token_inputs(model)
    assert sorted(parts) == ["collab.projection", "collab.sid", "text.projection", "text.sid"]
    assert parts["text.sid"].shape == (30, HIDDEN)
