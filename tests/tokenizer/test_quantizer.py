"""The residual quantiser against a brute-force nearest-code search; straight-through gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmesid_cli.tokenizer.config import TokenizerConfig
from mmesid_cli.tokenizer.quantizer import ResidualQuantizer, quantized_latents
from mmesid_cli.tokenizer.rqvae import MMRQVAE


def make_quantizer(levels: int = 3, k: int = 5, e: int = 4, seed: int = 0) -> ResidualQuantizer:
    rq = ResidualQuantizer(levels, k, e)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for level, book in enumerate(rq.codebooks):
            book.copy_(torch.randn(k, e, generator=g) / (level + 1))
    return rq


def brute_force_codes(z: np.ndarray, books: list[np.ndarray]) -> np.ndarray:
    codes = np.zeros((z.shape[0], len(books)), dtype=np.int64)
    for i in range(z.shape[0]):
        residual = z[i].astype(np.float64)
        for level, book in enumerate(books):
            best, best_d = -1, np.inf
            for j in range(book.shape[0]):
                d = float(((residual - book[j]) ** 2).sum())
                if d < best_d:
                    best, best_d = j, d
            codes[i, level] = best
            residual = residual - book[best]
    return codes


def test_codes_equal_brute_force_nearest_code_search() -> None:
    rq = make_quantizer().eval()
    z = torch.randn(40, 4, generator=torch.Generator().manual_seed(1))
    books = [b.detach().numpy() for b in rq.codebooks]
    expected = brute_force_codes(z.numpy(), books)
    assert np.array_equal(rq(z).codes.numpy(), expected)
    assert np.array_equal(rq.encode(z).numpy(), expected)


def test_z_q_is_the_sum_of_the_chosen_codes() -> None:
    rq = make_quantizer().eval()
    z = torch.randn(10, 4, generator=torch.Generator().manual_seed(2))
    out = rq(z)
    by_hand = sum(rq.codebooks[level][out.codes[:, level]] for level in range(3))
    assert torch.allclose(out.z_q, by_hand, atol=1e-6)
    books = [b.detach() for b in rq.codebooks]
    assert np.allclose(
        quantized_latents(books, out.codes.numpy()), by_hand.detach().numpy(), atol=1e-6
    )


def test_straight_through_passes_the_gradient_to_z_unchanged() -> None:
    rq = make_quantizer().eval()
    z = torch.randn(8, 4, generator=torch.Generator().manual_seed(3), requires_grad=True)
    weights = torch.randn(8, 4, generator=torch.Generator().manual_seed(4))
    (rq(z).z_q * weights).sum().backward()
    assert torch.equal(z.grad, weights)


def test_commitment_of_every_level_reaches_the_encoder() -> None:
    # d/dz of β · mean_l mean ‖r_l − sg(c_l)‖², r_l = z − Σ_{i<l} c_i (the formula)
    rq = make_quantizer(levels=3).eval()
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(5), requires_grad=True)
    out = rq(z, beta=0.25)
    out.vq_loss.backward()
    books = [rq.codebooks[level][out.codes[:, level]].detach() for level in range(3)]
    residuals = [z.detach(), z.detach() - books[0], z.detach() - books[0] - books[1]]
    expected = (
        sum(0.25 * 2 * (r - c) / z.numel() for r, c in zip(residuals, books, strict=True)) / 3
    )
    assert torch.allclose(z.grad, expected, atol=1e-7)


def test_reference_mode_commits_through_level_one_only() -> None:
    # the reference subtracts straight-through values: residuals after level 1 are detached
    rq = make_quantizer(levels=2).eval()
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(5), requires_grad=True)
    out = rq(z, beta=0.25, commit_all_levels=False)
    out.vq_loss.backward()
    first = rq.codebooks[0][out.codes[:, 0]].detach()
    expected = 0.25 * 2 * (z.detach() - first) / z.numel() / 2  # mean over two levels
    assert torch.allclose(z.grad, expected, atol=1e-7)
    assert torch.equal(out.codes, rq(z).codes)  # same codes either way


def test_each_codebook_learns_from_its_own_level_only() -> None:
    rq = make_quantizer(levels=2).eval()
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(6))
    out = rq(z, beta=0.0)
    out.vq_loss.backward()
    for level in range(2):
        idx = out.codes[:, level]
        residual = z - (rq.codebooks[0][out.codes[:, 0]].detach() if level else 0)
        expected = torch.zeros_like(rq.codebooks[level])
        expected.index_add_(
            0, idx, 2 * (rq.codebooks[level][idx].detach() - residual) / z.numel() / 2
        )
        assert torch.allclose(rq.codebooks[level].grad, expected, atol=1e-7)


def test_gradients_reach_the_encoder_through_the_quantiser() -> None:
    config = TokenizerConfig(
        modalities=("text",),
        e_dim=4,
        hidden=(8,),
        levels=2,
        codebook_size=4,
        batch_size=8,
        recon="mse",
    )
    torch.manual_seed(0)
    model = MMRQVAE(config, {"text": 6})
    with torch.no_grad():
        for book in model.quantizers["text"].codebooks:
            book.normal_()
    x = torch.randn(8, 6)
    outputs = model({"text": x})
    parts = model.loss({"text": x}, outputs)
    parts.rec["text"].backward()  # the reconstruction term alone: only the straight-through path
    first = model.encoders["text"][0].weight.grad
    assert first is not None and float(first.abs().sum()) > 0


def test_sinkhorn_levels_apply_in_training_only() -> None:
    rq = make_quantizer(levels=2, k=4)
    # every residual is closest to code 0 at level 2, so only balancing spreads them
    with torch.no_grad():
        rq.codebooks[1].copy_(torch.tensor([[0.0] * 4] + [[5.0 + i] * 4 for i in range(3)]))
    z = rq.codebooks[0][torch.zeros(16, dtype=torch.long)].detach() + 0.01 * torch.randn(16, 4)
    rq.train()
    trained = rq(z, sinkhorn_levels={2}).codes[:, 1]
    rq.eval()
    nearest = rq(z, sinkhorn_levels={2}).codes[:, 1]
    assert set(nearest.tolist()) == {0}
    assert len(set(trained.tolist())) == 4


def test_quantized_latents_ignores_a_dedup_suffix_and_checks_levels() -> None:
    books = [np.eye(3, dtype=np.float32), 2 * np.eye(3, dtype=np.float32)]
    codes = np.array([[0, 1, 7], [2, 2, 0]])
    assert np.array_equal(quantized_latents(books, codes), [[1, 2, 0], [0, 0, 3]])
    with pytest.raises(ValueError):
        quantized_latents(books, codes[:, :1])
