"""Collapse figures against closed forms and numpy's rank."""

from __future__ import annotations

import numpy as np
import pytest

from mmesid_cli.analysis.collapse import (
    effective_rank,
    energy_dims,
    random_projection,
    spectrum,
)


def test_effective_rank_closed_forms() -> None:
    assert effective_rank(np.full(7, 3.0)) == pytest.approx(7.0)  # flat spectrum: all of it
    assert effective_rank(np.array([5.0, 0.0, 0.0])) == pytest.approx(1.0)
    # p = (1/2, 1/4, 1/4): entropy 1.5 ln 2, erank 2^1.5
    assert effective_rank(np.array([2.0, 1.0, 1.0])) == pytest.approx(2**1.5)
    assert effective_rank(np.zeros(3)) == 0.0


def test_energy_dims_count_leading_squares() -> None:
    values = np.sqrt(np.array([50.0, 40.0, 9.0, 1.0]))  # energies sum to 100
    assert energy_dims(values, (0.5, 0.9, 0.99, 1.0)) == {0.5: 1, 0.9: 2, 0.99: 3, 1.0: 4}


def test_spectrum_of_a_known_matrix() -> None:
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((30, 6)))
    v, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    sigma = np.array([10.0, 5.0, 2.0, 1.0, 0.0, 0.0])
    matrix = (u * sigma) @ v.T
    result = spectrum(matrix)
    np.testing.assert_allclose(result.singular_values, sigma, atol=1e-12)
    assert result.rank == 4 == np.linalg.matrix_rank(matrix)
    assert result.rtol == pytest.approx(30 * np.finfo(np.float64).eps)
    assert result.energy_dims[0.9] == 2  # (100 + 25) / 130 = 0.96
    assert spectrum(matrix, rtol=0.15).rank == 3  # 1.0 is below 0.15 · 10


def test_random_projection_cannot_raise_the_rank() -> None:
    rng = np.random.default_rng(1)
    table = rng.standard_normal((200, 8)).astype(np.float32)
    projected = random_projection(table, 40, seed=2)
    assert projected.shape == (200, 40) and projected.dtype == np.float32
    result = spectrum(projected)
    assert result.rank == 8 == np.linalg.matrix_rank(projected)
    assert result.singular_values[8] < 1e-5 * result.singular_values[0]
    np.testing.assert_array_equal(projected, random_projection(table, 40, seed=2))  # seeded


def test_stored_dtype_sets_the_tolerance_and_centering_removes_the_mean() -> None:
    rng = np.random.default_rng(3)
    matrix = rng.standard_normal((50, 4)) + 100.0  # a large common offset
    assert spectrum(matrix, dtype="bfloat16").rtol == pytest.approx(50 * 2.0**-7)
    assert spectrum(matrix, dtype="float32").rtol == pytest.approx(50 * np.finfo(np.float32).eps)
    raw, centered = spectrum(matrix), spectrum(matrix, center=True)
    assert raw.singular_values[0] > 50 * centered.singular_values[0]  # the offset dominates
    np.testing.assert_allclose(
        centered.singular_values,
        np.linalg.svd(matrix - matrix.mean(axis=0), compute_uv=False),
        rtol=1e-10,
    )


def test_spectrum_rejects_bad_matrices() -> None:
    with pytest.raises(ValueError, match="2-D"):
        spectrum(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        spectrum(np.array([[1.0, np.nan]]))
