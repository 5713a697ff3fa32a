"""MMD, InfoNCE and VQ losses against independent brute-force computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmesid_cli.tokenizer.losses import (
    gaussian_bandwidths,
    info_nce,
    mean_pairwise_sq_dist,
    mmd2,
    pairwise_sq_dists,
    reconstruction_loss,
    vq_loss,
)


def brute_force_mmd2(x_hat: list[list[float]], x: list[list[float]], alphas: list[float]) -> float:
    """method.md §3 written out as double loops over pairs, in plain Python floats."""

    def sq(a: list[float], b: list[float]) -> float:
        return sum((u - v) ** 2 for u, v in zip(a, b, strict=True))

    joined = x_hat + x
    mean_sq = sum(sq(u, v) for u in joined for v in joined) / len(joined) ** 2
    n = len(x)
    total = 0.0
    for alpha in alphas:
        sigma2 = alpha * mean_sq

        def k(a: list[float], b: list[float], s: float = sigma2) -> float:
            return math.exp(-sq(a, b) / (2 * s))

        hh = sum(k(x_hat[i], x_hat[j]) for i in range(n) for j in range(n) if i != j)
        xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j)
        hx = sum(k(x_hat[i], x[j]) for i in range(n) for j in range(n))
        total += hh / (n * (n - 1)) + xx / (n * (n - 1)) - 2 * hx / n**2
    return total


@pytest.mark.parametrize("alphas", [(0.5,), (0.25, 0.5, 1.0)])
def test_mmd_equals_brute_force_double_loop(alphas: tuple[float, ...]) -> None:
    g = torch.Generator().manual_seed(0)
    x_hat = torch.randn(9, 5, generator=g)
    x = torch.randn(9, 5, generator=g) * 1.5 + 0.3
    expected = brute_force_mmd2(x_hat.tolist(), x.tolist(), list(alphas))
    assert float(mmd2(x_hat, x, alphas)) == pytest.approx(expected, abs=1e-5)
    assert float(mmd2(x_hat.double(), x.double(), alphas)) == pytest.approx(expected, abs=1e-10)


def test_mmd_of_a_batch_against_itself_is_zero_up_to_the_estimator() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 16, generator=g, dtype=torch.float64)
    same = float(mmd2(x, x))
    # For X̂ = X the unbiased estimator is 2/n · (mean off-diagonal kernel − 1), |.| < 2/n.
    sigma2 = 0.5 * float(torch.cdist(x, x).pow(2).mean())
    kernel = torch.exp(-torch.cdist(x, x).pow(2) / (2 * sigma2))
    off_diag = float((kernel.sum() - 64) / (64 * 63))
    assert same == pytest.approx(2 / 64 * (off_diag - 1), abs=1e-10)
    assert abs(same) < 2 / 64
    shifted = float(mmd2(x + 1.0, x))
    assert shifted > 10 * abs(same)


def test_bandwidth_is_the_detached_mean_over_the_joined_batch() -> None:
    g = torch.Generator().manual_seed(2)
    x_hat = torch.randn(6, 3, generator=g, requires_grad=True)
    x = torch.randn(6, 3, generator=g)
    joined = torch.cat([x_hat.detach(), x])
    (sigma2,) = gaussian_bandwidths(x_hat, x, [0.5])
    assert float(sigma2) == pytest.approx(
        0.5 * float(torch.cdist(joined, joined).pow(2).mean()), rel=1e-5
    )
    assert not sigma2.requires_grad
    assert float(mean_pairwise_sq_dist(joined)) == pytest.approx(
        float(torch.cdist(joined, joined).pow(2).mean()), rel=1e-5
    )


@pytest.mark.parametrize("alphas", [(0.5,), (0.25, 1.0)])
def test_mmd_backward_equals_autograd_of_the_plain_formula(alphas: tuple[float, ...]) -> None:
    """The hand-written backward against autograd through cdist, for x̂ and x both."""
    g = torch.Generator().manual_seed(5)
    x_hat = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    x = (torch.randn(7, 3, generator=g, dtype=torch.float64) + 0.4).requires_grad_()
    weights = torch.randn((), generator=g, dtype=torch.float64)  # a non-unit upstream grad
    (weights * mmd2(x_hat, x, alphas)).backward()
    sigma2 = [s.detach() for s in gaussian_bandwidths(x_hat, x, alphas)]

    def plain(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = h.shape[0]
        total = h.new_zeros(())
        for s2 in sigma2:
            k = lambda a, b, s2=s2: torch.exp(-torch.cdist(a, b).pow(2) / (2 * s2))  # noqa: E731
            same = (k(h, h).sum() - n + k(y, y).sum() - n) / (n * (n - 1))
            total = total + same - 2 * k(h, y).sum() / n**2
        return total

    h, y = x_hat.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    (weights * plain(h, y)).backward()
    assert torch.allclose(x_hat.grad, h.grad, atol=1e-12)
    assert torch.allclose(x.grad, y.grad, atol=1e-12)


def test_mmd_near_zero_keeps_float64_accuracy_in_float32() -> None:
    """MMD² ≈ 0 is a small difference of large sums: float32 inputs, float64 sums."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(512, 64, generator=g, dtype=torch.float64)
    x_hat = x + 1e-3 * torch.randn(512, 64, generator=g, dtype=torch.float64)
    exact = float(mmd2(x_hat, x))
    got = float(mmd2(x_hat.float(), x.float()))
    assert abs(got - exact) <= 1e-3 * abs(exact)


def test_mmd_of_half_precision_inputs_is_computed_in_float32() -> None:
    g = torch.Generator().manual_seed(7)
    x_hat = torch.randn(16, 8, generator=g).bfloat16().requires_grad_()
    x = torch.randn(16, 8, generator=g).bfloat16()
    value = mmd2(x_hat, x)
    value.backward()
    expected = mmd2(x_hat.detach().float(), x.float())
    assert value.dtype == torch.bfloat16 and x_hat.grad.dtype == torch.bfloat16
    assert float(value.detach()) == pytest.approx(float(expected), rel=1e-2)


def test_mmd_gradient_treats_the_bandwidth_as_a_constant() -> None:
    g = torch.Generator().manual_seed(3)
    x_hat = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 4, generator=g, dtype=torch.float64)
    mmd2(x_hat, x).backward()
    (sigma2,) = gaussian_bandwidths(x_hat, x, [0.5])

    def fixed_bandwidth(h: torch.Tensor) -> torch.Tensor:
        k = lambda a, b: torch.exp(-torch.cdist(a, b).pow(2) / (2 * sigma2))  # noqa: E731
        n = h.shape[0]
        return (k(h, h).sum() - n) / (n * (n - 1)) - 2 * k(h, x).sum() / n**2

    h = x_hat.detach().clone().requires_grad_()
    fixed_bandwidth(h).backward()
    assert torch.allclose(x_hat.grad, h.grad, atol=1e-10)


def test_pairwise_sq_dists_matches_cdist() -> None:
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(7, 6, generator=g), torch.randn(3, 6, generator=g)
    assert torch.allclose(pairwise_sq_dists(a, b), torch.cdist(a, b).pow(2), atol=1e-5)


def test_reconstruction_loss_mse_is_the_elementwise_mean() -> None:
    a, b = torch.ones(4, 3), torch.zeros(4, 3)
    assert float(reconstruction_loss("mse", a, b, (0.5,))) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        reconstruction_loss("l1", a, b, (0.5,))


def test_vq_loss_value_and_gradients() -> None:
    residual = torch.tensor([[1.0, 2.0], [0.0, -1.0]], requires_grad=True)
    code = torch.tensor([[0.0, 2.0], [1.0, 1.0]], requires_grad=True)
    loss = vq_loss(residual, code, beta=0.25)
    mse = ((1.0**2) + 0 + 1.0 + 4.0) / 4
    assert float(loss.detach()) == pytest.approx(1.25 * mse)
    loss.backward()
    # codebook term moves the code towards sg(r); commitment (β) moves r towards sg(c)
    assert torch.allclose(code.grad, 2 * (code - residual).detach() / 4)
    assert torch.allclose(residual.grad, 0.25 * 2 * (residual - code).detach() / 4)


def test_info_nce_equals_cross_entropy_over_cosine_logits() -> None:
    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    logits = torch.tensor(
        [[float(F.cosine_similarity(q[i], k[j], dim=0)) / 0.1 for j in range(6)] for i in range(6)]
    )
    expected = sum(float(-F.log_softmax(logits[i], dim=0)[i]) for i in range(6)) / 6
    assert float(info_nce(q, k, 0.1)) == pytest.approx(expected, rel=1e-5)
    aligned = float(info_nce(q, q * 3.0, 0.1))  # same directions: the positive dominates
    assert aligned < expected
