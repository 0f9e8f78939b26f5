"""Tests for the disentanglement, clustering and probe metrics in tfssvae.metrics."""
import itertools

import numpy as np
import pytest

from tfssvae import metrics
from tfssvae.data import sprites

# Small vote counts keep the FactorVAE tests fast; the defaults are 10,000 / 5,000.
FAST = {"num_train": 300, "num_eval": 300, "num_variance_estimate": 2000}


# ------------------------------------------------------------------------- toy truth

class ToyGroundTruth:
    """Three factors of sizes (3, 4, 5); an observation is the factor values scaled to
    [0, 1] plus Gaussian noise, optionally mixed by a fixed rotation."""

    factor_sizes = (3, 4, 5)

    def __init__(self, noise=0.01, rotation=None):
        self.noise = noise
        self.rotation = rotation
        self._rng = np.random.default_rng(123)

    def sample_factors(self, num, rng):
        return rng.integers(0, self.factor_sizes, size=(num, 3))

    def values(self, factors):
        return factors / (np.array(self.factor_sizes) - 1.0)

    def observations(self, factors):
        obs = self.values(factors) + self.noise * self._rng.normal(size=factors.shape)
        return obs if self.rotation is None else obs @ self.rotation.T


def random_rotation(dims, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dims, dims)))
    return q


# ----------------------------------------------------------------- FactorVAE score

def test_factor_vae_identity_scores_one():
    scores = metrics.factor_vae_score(lambda obs: obs, ToyGroundTruth(), **FAST)
    assert scores == {"train_accuracy": 1.0, "eval_accuracy": 1.0, "num_active_dims": 3}


def test_factor_vae_unmixing_a_rotation_scores_one():
    rotation = random_rotation(3, seed=1)
    truth = ToyGroundTruth(rotation=rotation)
    scores = metrics.factor_vae_score(lambda obs: obs @ rotation, truth, **FAST)
    assert scores["eval_accuracy"] == 1.0


def test_factor_vae_two_dims_mixing_two_factors_score_below_one():
    # Dims v0 + v1 and v0 - v1: fixing v0 or v1 lowers both dims' variance alike, so
    # their votes split between the two dims and about half of them are wrong.
    def representation(obs):
        return np.stack([obs[:, 0] + obs[:, 1], obs[:, 0] - obs[:, 1], obs[:, 2]], 1)

    scores = metrics.factor_vae_score(representation, ToyGroundTruth(), **FAST)
    assert 0.55 < scores["eval_accuracy"] < 0.8


def test_factor_vae_duplicated_and_dropped_factor_scores_about_two_thirds():
    # Dims: factor 0 twice, factor 1; factor 2 is lost, so its votes (1/3) are wrong.
    scores = metrics.factor_vae_score(lambda obs: obs[:, [0, 0, 1]], ToyGroundTruth(),
                                      **FAST)
    assert 0.55 < scores["eval_accuracy"] < 0.8
    assert scores["num_active_dims"] == 3


def test_factor_vae_noise_representation_is_near_chance():
    rng = np.random.default_rng(7)
    scores = metrics.factor_vae_score(lambda obs: rng.normal(size=(len(obs), 3)),
                                      ToyGroundTruth(), **FAST)
    assert 0.2 < scores["eval_accuracy"] < 0.5


def test_factor_vae_prunes_by_global_std():
    rng = np.random.default_rng(3)

    def representation(obs):
        n = len(obs)
        return np.concatenate([
            obs,
            np.full((n, 1), 2.5),               # constant: pruned
            0.01 * rng.normal(size=(n, 1)),     # std 0.01 < 0.05: pruned
            0.1 * rng.normal(size=(n, 1)),      # std 0.1 (variance 0.01): kept
        ], axis=1)

    scores = metrics.factor_vae_score(representation, ToyGroundTruth(), **FAST)
    assert scores["num_active_dims"] == 4
    assert scores["eval_accuracy"] == 1.0
    loose = metrics.factor_vae_score(representation, ToyGroundTruth(),
                                     prune_threshold=0.0, **FAST)
    assert loose["num_active_dims"] == 5  # the constant dim is pruned whatever the threshold


def test_factor_vae_all_pruned_gives_zero():
    scores = metrics.factor_vae_score(lambda obs: np.zeros((len(obs), 2)),
                                      ToyGroundTruth(), **FAST)
    assert scores == {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}


def test_factor_vae_is_repeatable_and_chunking_only_changes_the_draws():
    def truth():  # noisy enough for votes to disagree; a fresh noise stream each call
        return ToyGroundTruth(noise=0.6)

    first = metrics.factor_vae_score(lambda obs: obs, truth(), seed=5, **FAST)
    second = metrics.factor_vae_score(lambda obs: obs, truth(), seed=5, **FAST)
    assert first == second
    assert 0.5 < first["eval_accuracy"] < 1.0
    chunked = metrics.factor_vae_score(lambda obs: obs, truth(), seed=5, chunk_size=64,
                                       **FAST)
    assert abs(chunked["eval_accuracy"] - first["eval_accuracy"]) < 0.15


def test_factor_vae_calls_the_representation_in_chunks():
    sizes = []

    def representation(obs):
        sizes.append(len(obs))
        return obs

    metrics.factor_vae_score(representation, ToyGroundTruth(), batch_size=10,
                             num_train=25, num_eval=5, num_variance_estimate=30,
                             chunk_size=100)
    # Variance: 30 samples; train: 10 + 10 + 5 batches of 10; eval: 5 batches of 10.
    assert sizes == [30, 100, 100, 50, 50]


def test_factor_vae_fixes_one_factor_per_batch():
    seen = []

    class Recording(ToyGroundTruth):
        def observations(self, factors):
            seen.append(factors.copy())
            return super().observations(factors)

    metrics.factor_vae_score(lambda obs: obs, Recording(), batch_size=8, num_train=40,
                             num_eval=1, num_variance_estimate=8, chunk_size=320)
    batches = seen[1].reshape(40, 8, 3)
    constant = (batches == batches[:, :1, :]).all(axis=1)  # [batches, factors]
    assert constant.any(axis=1).all()
    # Every factor gets fixed in some batch (40 draws from 3 factors).
    assert set(np.flatnonzero(constant.sum(axis=0))) == {0, 1, 2}


# -------------------------------------------------------------------- sprites adapter

def test_sprites_ground_truth_follows_the_protocol():
    truth = sprites.SpritesGroundTruth()
    assert truth.factor_sizes == (3, 6, 40, 32, 32)
    factors = truth.sample_factors(2000, np.random.default_rng(0))
    assert factors.shape == (2000, 5)
    assert np.issubdtype(factors.dtype, np.integer)
    for k, size in enumerate(truth.factor_sizes):
        assert set(np.unique(factors[:, k])) == set(range(size))
    again = truth.sample_factors(2000, np.random.default_rng(0))
    np.testing.assert_array_equal(factors, again)
    images = truth.observations(factors[:7])
    assert images.dtype == np.float32 and images.shape == (7, 64, 64, 1)
    np.testing.assert_array_equal(images, sprites.render(factors[:7]))


def sprite_features(images):
    """Hand-made code [n, 3]: centroid column, centroid row, lit pixel count."""
    images = images[..., 0]
    count = images.sum(axis=(1, 2))
    index = np.arange(images.shape[1])
    column = (images.sum(axis=1) * index).sum(axis=1) / count
    row = (images.sum(axis=2) * index).sum(axis=1) / count
    return np.stack([column, row, count], axis=1)


def test_factor_vae_on_sprites_with_centroid_and_area():
    # The centroid identifies x and y, the area identifies scale; shape and
    # orientation are not captured, so about 3 of 5 votes are right.
    scores = metrics.factor_vae_score(
        sprite_features, sprites.SpritesGroundTruth(), num_train=150, num_eval=100,
        num_variance_estimate=1000)
    assert scores["num_active_dims"] == 3
    assert 0.5 < scores["eval_accuracy"] < 0.85


# ------------------------------------------------------------------------------- MIG

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


# ------------------------------------------------------------- best matching accuracy

def brute_force_matching(predicted, truth):
    p_values, t_values = np.unique(predicted), np.unique(truth)
    best = 0
    if len(p_values) >= len(t_values):
        for image in itertools.permutations(p_values, len(t_values)):
            mapping = dict(zip(t_values, image))
            best = max(best, sum(mapping[t] == p for p, t in zip(predicted, truth)))
    else:
        for image in itertools.permutations(t_values, len(p_values)):
            mapping = dict(zip(p_values, image))
            best = max(best, sum(mapping[p] == t for p, t in zip(predicted, truth)))
    return best / len(predicted)


@pytest.mark.parametrize("num_predicted,num_truth", [(3, 3), (4, 4), (5, 3), (2, 4)])
def test_best_matching_equals_brute_force(num_predicted, num_truth):
    rng = np.random.default_rng(num_predicted * 10 + num_truth)
    for _ in range(5):
        truth = rng.integers(0, num_truth, size=60)
        # Partly informative clusters, so the best matching is not trivial.
        predicted = np.where(rng.random(60) < 0.5, truth % num_predicted,
                             rng.integers(0, num_predicted, size=60))
        assert metrics.best_matching_accuracy(predicted, truth) == pytest.approx(
            brute_force_matching(predicted, truth))


def test_best_matching_of_a_relabelled_clustering_is_one():
    truth = np.random.default_rng(0).integers(0, 6, size=500)
    relabel = np.array([4, 0, 5, 1, 3, 2]) + 10
    assert metrics.best_matching_accuracy(relabel[truth], truth) == 1.0
    names = np.array(["a", "b", "c", "d", "e", "f"])
    assert metrics.best_matching_accuracy(names[truth], truth) == 1.0


# ------------------------------------------------------------------ probes, prototypes

def blobs(n, seed, num_classes=3, dims=5, spread=10.0):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(scale=spread, size=(num_classes, dims))
    labels = rng.integers(0, num_classes, size=n)
    return centres[labels] + rng.normal(size=(n, dims)), labels


def test_linear_probe_on_separable_data_is_near_one():
    train, train_labels = blobs(300, 0)
    test, test_labels = blobs(300, 1)
    assert metrics.linear_probe_accuracy(train, train_labels, test, test_labels) > 0.98


def test_linear_probe_standardises_features():
    # Only feature 0 carries the label, at a scale of 1e-4; without standardisation
    # the L2 penalty on its huge weight would leave the probe near chance.
    rng = np.random.default_rng(5)

    def data(n):
        labels = rng.integers(0, 2, size=n)
        features = rng.normal(size=(n, 4))
        features[:, 0] = 1e-4 * (4.0 * labels + rng.normal(size=n))
        return features, labels

    assert metrics.linear_probe_accuracy(*data(300), *data(300)) > 0.95


def test_linear_probe_on_random_labels_is_near_chance():
    rng = np.random.default_rng(0)
    accuracy = metrics.linear_probe_accuracy(
        rng.normal(size=(600, 5)), rng.integers(0, 3, size=600),
        rng.normal(size=(600, 5)), rng.integers(0, 3, size=600))
    assert abs(accuracy - 1 / 3) < 0.1


def test_nearest_prototype_equals_brute_force():
    rng = np.random.default_rng(0)
    prototypes, prototype_labels = rng.normal(size=(12, 4)), rng.integers(0, 4, size=12)
    queries, query_labels = rng.normal(size=(500, 4)), rng.integers(0, 4, size=500)
    expected = np.mean([
        prototype_labels[np.argmin([np.linalg.norm(q - p) for p in prototypes])] == label
        for q, label in zip(queries, query_labels)])
    assert metrics.nearest_prototype_accuracy(
        prototypes, prototype_labels, queries, query_labels) == pytest.approx(expected)
    # Queries at the prototypes themselves are all right.
    assert metrics.nearest_prototype_accuracy(
        prototypes, prototype_labels, prototypes + 1e-6, prototype_labels) == 1.0


# ------------------------------------------------------------------------- bad input

def test_factor_vae_bad_input():
    truth = ToyGroundTruth()
    with pytest.raises(ValueError, match="batch_size must be >= 2; received 1"):
        metrics.factor_vae_score(lambda obs: obs, truth, batch_size=1)
    with pytest.raises(ValueError, match="num_train"):
        metrics.factor_vae_score(lambda obs: obs, truth, num_train=0)
    with pytest.raises(ValueError, match="prune_threshold"):
        metrics.factor_vae_score(lambda obs: obs, truth, prune_threshold=-1.0)
    with pytest.raises(ValueError, match="representation: expected a callable"):
        metrics.factor_vae_score(np.zeros(3), truth)
    class NoObservations:
        factor_sizes = (3, 4, 5)

        def sample_factors(self, num, rng):
            return rng.integers(0, 3, size=(num, 3))

    with pytest.raises(ValueError, match="ground_truth: .* without 'observations'"):
        metrics.factor_vae_score(lambda obs: obs, NoObservations())
    with pytest.raises(ValueError, match="ground_truth.factor_sizes: expected a non-emp"):
        metrics.factor_vae_score(lambda obs: obs, type("Empty", (ToyGroundTruth,),
                                                       {"factor_sizes": ()})())
    with pytest.raises(ValueError, match=r"representation\(images\): expected 2000 rows"):
        metrics.factor_vae_score(lambda obs: obs[:-1], truth, **FAST)
    with pytest.raises(ValueError, match=r"representation\(images\): expected finite"):
        metrics.factor_vae_score(lambda obs: np.full_like(obs, np.nan), truth, **FAST)
    with pytest.raises(ValueError, match=r"representation\(images\): expected a rank-2"):
        metrics.factor_vae_score(lambda obs: obs[:, 0], truth, **FAST)

    class WrongShape(ToyGroundTruth):
        def sample_factors(self, num, rng):
            return super().sample_factors(num, rng)[:, :2]

    with pytest.raises(ValueError, match=r"sample_factors: expected shape \(2000, 3\)"):
        metrics.factor_vae_score(lambda obs: obs, WrongShape(), **FAST)

    class OutOfRange(ToyGroundTruth):
        def sample_factors(self, num, rng):
            return super().sample_factors(num, rng) + 1

    with pytest.raises(ValueError, match="sample_factors: expected factor k in"):
        metrics.factor_vae_score(lambda obs: obs, OutOfRange(), **FAST)


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


def test_matching_probe_and_prototype_bad_input():
    with pytest.raises(ValueError, match="truth: expected 3 labels"):
        metrics.best_matching_accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="predicted: expected at least one label"):
        metrics.best_matching_accuracy([], [])
    with pytest.raises(ValueError, match="predicted: expected a rank-1 array"):
        metrics.best_matching_accuracy(np.zeros((2, 2)), [0, 1])
    features = np.random.default_rng(0).normal(size=(20, 3))
    labels = np.arange(20) % 2
    with pytest.raises(ValueError, match="test_features: expected 3 columns, received 2"):
        metrics.linear_probe_accuracy(features, labels, features[:, :2], labels)
    with pytest.raises(ValueError, match="train_labels: expected at least two classes"):
        metrics.linear_probe_accuracy(features, np.zeros(20), features, labels)
    with pytest.raises(ValueError, match="train_labels: expected 20 labels"):
        metrics.linear_probe_accuracy(features, labels[:5], features, labels)
    with pytest.raises(ValueError, match="max_iter"):
        metrics.linear_probe_accuracy(features, labels, features, labels, max_iter=0)
    with pytest.raises(ValueError, match="queries: expected 3 columns, received 4"):
        metrics.nearest_prototype_accuracy(features, labels, np.zeros((5, 4)), np.zeros(5))
    with pytest.raises(ValueError, match="prototype_labels: expected 20 labels"):
        metrics.nearest_prototype_accuracy(features, labels[:3], features, labels)
    with pytest.raises(ValueError, match="prototypes: expected finite values"):
        metrics.nearest_prototype_accuracy(features * np.inf, labels, features, labels)
