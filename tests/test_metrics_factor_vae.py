"""Tests for tfssvae.metrics.factor_vae: toy ground truths with known scores, pooled against fresh batches."""
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


# ----------------------------------------------------------------- fresh vote batches

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
                             num_eval=3, num_variance_estimate=8, chunk_size=320)
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


# ------------------------------------------------------------------ pooled vote batches

POOLED = {**FAST, "samples_per_value": 128}


def test_pooled_identity_scores_one():
    scores = metrics.factor_vae_score(lambda obs: obs, ToyGroundTruth(), **POOLED)
    assert scores == {"train_accuracy": 1.0, "eval_accuracy": 1.0, "num_active_dims": 3}


def test_pooled_noise_representation_is_near_chance():
    # Each eval vote is right when the classifier maps a random dim to the vote's factor: 1/3 on
    # average; 300 votes give a std of 0.03, and the range is five of them either side.
    rng = np.random.default_rng(7)
    scores = metrics.factor_vae_score(lambda obs: rng.normal(size=(len(obs), 3)), ToyGroundTruth(), **POOLED)
    assert 0.18 < scores["eval_accuracy"] < 0.48


def test_pooled_and_fresh_batches_give_the_same_score():
    # An entangled code (score about 2/3): each pooled vote has the definition's distribution, so
    # both ways estimate the same number; with 3,000 evaluation votes each estimate has a std of
    # about 0.01 (binomial), and 0.05 is more than three stds of their difference.
    def representation(obs):
        return np.stack([obs[:, 0] + obs[:, 1], obs[:, 0] - obs[:, 1], obs[:, 2]], 1)

    options = dict(num_train=1000, num_eval=3000, num_variance_estimate=2000)
    fresh = metrics.factor_vae_score(representation, ToyGroundTruth(), **options)
    pooled = metrics.factor_vae_score(representation, ToyGroundTruth(), samples_per_value=256, **options)
    assert 0.5 < fresh["eval_accuracy"] < 0.85
    assert abs(pooled["eval_accuracy"] - fresh["eval_accuracy"]) < 0.05


def test_pooled_draws_each_cell_once_with_its_factor_fixed():
    seen = []

    class Recording(ToyGroundTruth):
        def observations(self, factors):
            seen.append(factors.copy())
            return super().observations(factors)

    sizes = []

    def representation(obs):
        sizes.append(len(obs))
        return obs

    metrics.factor_vae_score(representation, Recording(), batch_size=8, num_train=200, num_eval=50,
                             num_variance_estimate=10, samples_per_value=16, chunk_size=10 ** 6)
    # Variance samples, then the training pool and the evaluation pool, each encoded in one call.
    assert len(seen) == 3 and sizes[0] == 10
    train_pool = seen[1].reshape(-1, 16, 3)
    # 200 votes over the 3 + 4 + 5 = 12 (factor, value) cells reach all of them.
    assert len(train_pool) == 12
    fixed = [(k, int(block[0, k])) for block in train_pool for k in range(3) if (block[:, k] == block[0, k]).all()]
    assert set(fixed) >= {(k, v) for k, size in enumerate((3, 4, 5)) for v in range(size)}


def test_variance_codes_replace_the_variance_samples():
    calls = []

    def representation(obs):
        calls.append(len(obs))
        return obs

    # Dim 2 constant in the given codes: pruned, so only two dims vote.
    codes = np.random.default_rng(0).normal(size=(100, 3)) * [1.0, 1.0, 0.0]
    scores = metrics.factor_vae_score(representation, ToyGroundTruth(), variance_codes=codes, **POOLED)
    assert scores["num_active_dims"] == 2
    assert calls and 100 not in calls and 2000 not in calls  # no variance samples drawn


def test_too_few_votes_and_bad_pool_sizes_are_value_errors():
    truth = ToyGroundTruth()
    with pytest.raises(ValueError, match=r"num_train: expected at least one vote per factor \(3 factors\), received 2"):
        metrics.factor_vae_score(lambda obs: obs, truth, num_train=2)
    with pytest.raises(ValueError, match=r"num_eval: expected at least one vote per factor"):
        metrics.factor_vae_score(lambda obs: obs, truth, num_eval=1)
    with pytest.raises(ValueError, match="samples_per_value: expected at least batch_size=64"):
        metrics.factor_vae_score(lambda obs: obs, truth, samples_per_value=10)
    with pytest.raises(ValueError, match="variance_codes: expected 3 columns|variance_codes: expected a rank-2"):
        metrics.factor_vae_score(lambda obs: obs, truth, variance_codes=np.zeros(5))
