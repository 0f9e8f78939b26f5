"""Tests for tfssvae.metrics.mig: closed forms (identity, independence, duplication) and a direct numpy MIG."""
import numpy as np
import pytest

from tfssvae import metrics


def make_factors(n, seed, sizes=(3, 4, 5)):
    return np.random.default_rng(seed).integers(0, sizes, size=(n, len(sizes)))


def test_mig_of_the_factors_themselves_is_near_one():
    factors = make_factors(5000, 0)
    latents = factors + 1e-3 * np.random.default_rng(1).normal(size=factors.shape)
    mig, gaps = metrics.mutual_information_gap(latents, factors, return_per_factor=True)
    assert mig > 0.97
    assert gaps.shape == (3,) and (gaps > 0.97).all()


def test_mig_of_independent_latents_is_near_zero():
    factors = make_factors(5000, 0)
    latents = np.random.default_rng(2).normal(size=(5000, 4))
    assert metrics.mutual_information_gap(latents, factors) < 0.03


def test_mig_penalises_entangled_and_duplicated_latents():
    factors = make_factors(5000, 0)
    noise = np.random.default_rng(3).normal(size=(5000, 1))
    clean = metrics.mutual_information_gap(factors.astype(float), factors)
    # One latent holds factor 0 + factor 1 (neither recoverable alone).
    entangled, gaps = metrics.mutual_information_gap(
        np.concatenate([factors[:, :1] + factors[:, 1:2], factors[:, 2:], noise], 1),
        factors, return_per_factor=True)
    assert gaps[2] > 0.97 and gaps[0] < 0.5 and gaps[1] < 0.6
    assert entangled < clean - 0.3
    # Factor 0 in two latents: its gap is 0.
    duplicated, gaps = metrics.mutual_information_gap(
        factors[:, [0, 0, 1, 2]].astype(float), factors, return_per_factor=True)
    assert gaps[0] == pytest.approx(0.0, abs=1e-12)
    assert duplicated == pytest.approx(2 / 3, abs=0.02)


def numpy_mig(latents, factors, num_bins):
    """Direct MIG: equal-width bins, MI from joint counts, natural logs."""
    low, high = latents.min(axis=0), latents.max(axis=0)
    bins = np.floor((latents - low) / (high - low) * num_bins).astype(int)
    bins = np.minimum(bins, num_bins - 1)
    n = len(latents)

    def mi(a, b):
        joint = np.zeros((a.max() + 1, b.max() + 1))
        np.add.at(joint, (a, b), 1.0)
        joint /= n
        pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
        nz = joint > 0
        return float((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum())

    gaps = []
    for k in range(factors.shape[1]):
        info = sorted((mi(bins[:, j], factors[:, k]) for j in range(latents.shape[1])),
                      reverse=True)
        gaps.append((info[0] - info[1]) / mi(factors[:, k], factors[:, k]))
    return np.mean(gaps), np.array(gaps)


def test_mig_matches_a_direct_numpy_computation():
    rng = np.random.default_rng(4)
    factors = rng.integers(0, [2, 3], size=(300, 2))
    latents = np.stack([factors[:, 0] + rng.normal(scale=0.7, size=300),
                        rng.normal(size=300) + 0.3 * factors[:, 1],
                        factors[:, 1] * rng.uniform(0.5, 1.5, size=300)], axis=1)
    mig, gaps = metrics.mutual_information_gap(latents, factors, num_bins=5,
                                               return_per_factor=True)
    expected_mig, expected_gaps = numpy_mig(latents, factors, 5)
    np.testing.assert_allclose(gaps, expected_gaps, rtol=1e-9, atol=1e-12)
    assert mig == pytest.approx(expected_mig, rel=1e-9)
    assert 0.05 < mig < 0.95  # a case where the gaps are not trivially 0 or 1


def test_mig_skips_constant_factors_and_handles_one_latent():
    factors = make_factors(2000, 5)
    factors[:, 1] = 7
    latents = factors.astype(float)
    mig, gaps = metrics.mutual_information_gap(latents, factors, return_per_factor=True)
    assert np.isnan(gaps[1]) and not np.isnan(gaps[[0, 2]]).any()
    assert mig == pytest.approx(np.mean(gaps[[0, 2]]))
    # A single latent dim: the gap is its mutual information over the entropy.
    single = metrics.mutual_information_gap(factors[:, :1].astype(float), factors[:, :1])
    assert single == pytest.approx(1.0)


def test_mig_bad_input():
    factors = make_factors(50, 0)
    latents = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(ValueError, match="num_bins must be >= 2; received 1"):
        metrics.mutual_information_gap(latents, factors, num_bins=1)
    with pytest.raises(ValueError, match="factors: expected 50 rows"):
        metrics.mutual_information_gap(latents, factors[:49])
    with pytest.raises(ValueError, match="latents: expected a rank-2 array"):
        metrics.mutual_information_gap(latents[:, 0], factors)
    with pytest.raises(ValueError, match="latents: expected at least one example"):
        metrics.mutual_information_gap(np.zeros((0, 2)), factors[:0])
    bad = latents.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="latents: expected finite values, .* row 3"):
        metrics.mutual_information_gap(bad, factors)
    with pytest.raises(ValueError, match="factors: expected integer values"):
        metrics.mutual_information_gap(latents, factors + 0.5)
    with pytest.raises(ValueError, match="factors: expected at least one factor with two"):
        metrics.mutual_information_gap(latents, np.zeros((50, 2), dtype=int))
