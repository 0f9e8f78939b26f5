"""Tests for tfssvae.distributions: log densities against closed forms in numpy."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfssvae import distributions as D


# ---------------------------------------------------------------------------
# numpy references
# ---------------------------------------------------------------------------


def np_softplus(x):
    return np.logaddexp(0.0, x)


def np_log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def np_log_softmax(logits):
    logits = logits - logits.max(axis=-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))


def np_normal_log_density(x, loc, scale, event_ndims):
    """Sum of univariate Normal log densities over the last ``event_ndims`` axes."""
    elementwise = -0.5 * np.log(2 * np.pi) - np.log(scale) - 0.5 * ((x - loc) / scale) ** 2
    return elementwise.sum(axis=tuple(range(-event_ndims, 0)))


def np_concrete_log_density(x, logits, temperature):
    """Concrete (Gumbel-softmax) density of Maddison, Mnih and Teh (2017), eq. (1).

    p(x) = (n-1)! t^(n-1) prod_k [alpha_k x_k^(-t-1) / sum_i alpha_i x_i^(-t)],
    with alpha = exp(logits), n classes and temperature t, for x on the simplex.
    """
    n = x.shape[-1]
    log_alpha = logits
    log_terms = log_alpha - temperature * np.log(x)  # log(alpha_i x_i^-t)
    m = log_terms.max(axis=-1, keepdims=True)
    log_norm = (m + np.log(np.exp(log_terms - m).sum(axis=-1, keepdims=True)))[..., 0]
    return (
        math.lgamma(n)
        + (n - 1) * np.log(temperature)
        + (log_alpha - (temperature + 1) * np.log(x)).sum(axis=-1)
        - n * log_norm
    )


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------------------
# DiagonalNormal
# ---------------------------------------------------------------------------


def test_diagonal_normal_vector_log_prob_matches_closed_form(rng):
    layer = D.DiagonalNormal(5, min_scale=1e-3)
    params = rng.normal(size=(3, 10)).astype(np.float32)
    x = rng.normal(size=(3, 5)).astype(np.float32)
    dist = layer(params)
    assert dist.batch_shape == (3,)
    assert dist.event_shape == (5,)
    pairs = params.reshape(3, 5, 2)
    loc, scale = pairs[..., 0], np_softplus(pairs[..., 1]) + 1e-3
    expected = np_normal_log_density(x, loc, scale, 1)
    np.testing.assert_allclose(dist.log_prob(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dist.mean().numpy(), loc, rtol=1e-6)
    np.testing.assert_allclose(dist.stddev().numpy(), scale, rtol=1e-5)


def test_diagonal_normal_conv_layout_interleaves_parameters(rng):
    event_shape = (4, 3, 2)
    layer = D.DiagonalNormal(event_shape)
    params = rng.normal(size=(2, 4, 3, 4)).astype(np.float32)  # [batch, H, W, C * 2]
    x = rng.normal(size=(2,) + event_shape).astype(np.float32)
    dist = layer(params)
    assert dist.batch_shape == (2,)
    assert dist.event_shape == event_shape
    assert dist.sample().shape == (2,) + event_shape
    # Channel c of a pixel uses parameters 2c (loc) and 2c + 1 (raw scale).
    loc = params[..., 0::2]
    scale = np_softplus(params[..., 1::2]) + 1e-4
    expected = np_normal_log_density(x, loc, scale, 3)
    np.testing.assert_allclose(dist.log_prob(x).numpy(), expected, rtol=1e-5, atol=1e-4)
    # The flat MLP layout [batch, prod * 2] gives the same distribution.
    flat = layer(params.reshape(2, -1))
    np.testing.assert_allclose(flat.log_prob(x).numpy(), expected, rtol=1e-5, atol=1e-4)


def test_diagonal_normal_min_scale_floor(rng):
    layer = D.DiagonalNormal(4, min_scale=1e-2)
    params = np.concatenate(
        [np.zeros((2, 4, 1)), np.full((2, 4, 1), -1e4)], axis=-1
    ).reshape(2, 8).astype(np.float32)
    dist = layer(params)
    stddev = dist.stddev().numpy()
    assert np.all(stddev >= 1e-2)
    np.testing.assert_allclose(stddev, 1e-2, rtol=1e-5)
    assert np.all(np.isfinite(dist.log_prob(np.ones((2, 4), np.float32)).numpy()))


def test_diagonal_normal_params_size():
    assert D.DiagonalNormal.params_size(7) == 14
    assert D.DiagonalNormal.params_size((8, 8, 3)) == 384


# ---------------------------------------------------------------------------
# Bernoulli
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("grey", [False, True])
def test_bernoulli_image_log_prob_matches_cross_entropy(rng, grey):
    event_shape = (3, 4, 2)
    layer = D.Bernoulli(event_shape)
    logits = rng.normal(scale=3.0, size=(5,) + event_shape).astype(np.float32)
    if grey:
        x = rng.uniform(size=(5,) + event_shape).astype(np.float32)
    else:
        x = (rng.uniform(size=(5,) + event_shape) < 0.5).astype(np.float32)
    dist = layer(logits)
    assert dist.batch_shape == (5,)
    assert dist.event_shape == event_shape
    sample = dist.sample()
    assert sample.dtype == tf.float32 and sample.shape == (5,) + event_shape
    expected = (x * np_log_sigmoid(logits) + (1 - x) * np_log_sigmoid(-logits)).sum(
        axis=(1, 2, 3)
    )
    np.testing.assert_allclose(dist.log_prob(x).numpy(), expected, rtol=1e-5, atol=1e-4)


def test_bernoulli_log_prob_broadcasts_sample_dimensions_and_takes_bfloat16_logits(rng):
    layer = D.Bernoulli((2, 3))
    logits = rng.normal(scale=3.0, size=(4, 6)).astype(np.float32)
    x = (rng.uniform(size=(7, 4, 2, 3)) < 0.5).astype(np.float32)
    reference = tfp.distributions.Independent(tfp.distributions.Bernoulli(logits=logits.reshape(4, 2, 3)), 2)
    # Extra sample dimensions take TFP's broadcasting path; one value per example, the fused kernel.
    np.testing.assert_allclose(layer(logits).log_prob(x).numpy(), reference.log_prob(x).numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(layer(logits).log_prob(x[0]).numpy(), reference.log_prob(x[0]).numpy(),
                               rtol=1e-5, atol=1e-4)
    # Batch dimensions broadcast either way, as TFP's do.
    np.testing.assert_allclose(layer(logits).log_prob(x[0, :1]).numpy(), reference.log_prob(x[0, :1]).numpy(),
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(layer(logits[:1]).log_prob(x[0]).numpy(),
                               tfp.distributions.Independent(tfp.distributions.Bernoulli(
                                   logits=logits[:1].reshape(1, 2, 3)), 2).log_prob(x[0]).numpy(), rtol=1e-5, atol=1e-4)
    # bfloat16 logits (a mixed policy's network output) are read as they are; the density is float32.
    rounded = tf.cast(tf.cast(logits, tf.bfloat16), tf.float32).numpy().reshape(4, 2, 3)
    got = layer(tf.cast(logits, tf.bfloat16)).log_prob(x[0])
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), tfp.distributions.Independent(
        tfp.distributions.Bernoulli(logits=rounded), 2).log_prob(x[0]).numpy(), rtol=1e-5, atol=1e-4)


def test_bernoulli_flat_input_for_image_event(rng):
    layer = D.Bernoulli((2, 2, 1))
    logits = rng.normal(size=(3, 4)).astype(np.float32)
    dist = layer(logits)
    assert dist.event_shape == (2, 2, 1)
    np.testing.assert_allclose(
        dist.distribution.logits.numpy(), logits.reshape(3, 2, 2, 1), rtol=1e-6
    )
    assert D.Bernoulli.params_size((2, 2, 1)) == 4


# ---------------------------------------------------------------------------
# Categorical and RelaxedOneHotCategorical
# ---------------------------------------------------------------------------


def test_categorical_log_prob_is_log_softmax(rng):
    logits = rng.normal(size=(6, 4)).astype(np.float32)
    labels = rng.integers(0, 4, size=6).astype(np.int32)
    dist = D.Categorical(4)(logits)
    assert dist.batch_shape == (6,) and dist.event_shape == ()
    assert dist.sample().dtype == tf.int32
    expected = np_log_softmax(logits.astype(np.float64))[np.arange(6), labels]
    np.testing.assert_allclose(dist.log_prob(labels).numpy(), expected, rtol=1e-5)


def test_one_hot_categorical_log_prob_is_log_softmax(rng):
    logits = rng.normal(size=(6, 4)).astype(np.float32)
    one_hot = np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=6)]
    dist = D.Categorical(4, one_hot=True)(logits)
    assert dist.batch_shape == (6,) and dist.event_shape == (4,)
    assert dist.sample().dtype == tf.float32
    expected = (one_hot * np_log_softmax(logits.astype(np.float64))).sum(axis=-1)
    np.testing.assert_allclose(dist.log_prob(one_hot).numpy(), expected, rtol=1e-5)
    assert D.Categorical.params_size(4) == 4


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_relaxed_one_hot_matches_concrete_density(rng, temperature):
    logits = rng.normal(size=(8, 3)).astype(np.float32)
    layer = D.RelaxedOneHotCategorical(3, temperature=temperature)
    dist = layer(logits)
    assert dist.batch_shape == (8,) and dist.event_shape == (3,)
    # Points inside the simplex, away from its corners.
    x = rng.dirichlet(np.ones(3) * 2.0, size=8)
    expected = np_concrete_log_density(x, logits.astype(np.float64), temperature)
    got = dist.log_prob(x.astype(np.float32)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    sample = dist.sample().numpy()
    np.testing.assert_allclose(sample.sum(axis=-1), 1.0, rtol=1e-5)


def test_relaxed_one_hot_rejects_non_positive_temperature():
    for temperature in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature"):
            D.RelaxedOneHotCategorical(3, temperature=temperature)


# ---------------------------------------------------------------------------
# LearnedVarianceNormal
# ---------------------------------------------------------------------------


def test_learned_variance_normal_starts_at_initial_scale(rng):
    layer = D.LearnedVarianceNormal((2, 3), min_scale=1e-3, initial_scale=0.5)
    dist = layer(rng.normal(size=(4, 6)).astype(np.float32))
    assert layer.raw_scale.shape == (2, 3)
    np.testing.assert_allclose(dist.stddev().numpy(), 0.5, rtol=1e-5)
    assert dist.batch_shape == (4,) and dist.event_shape == (2, 3)


def test_learned_variance_normal_log_prob_uses_weight(rng):
    event_shape = (2, 2, 3)
    layer = D.LearnedVarianceNormal(event_shape, min_scale=1e-2)
    mean = rng.normal(size=(3, 2, 2, 3)).astype(np.float32)  # conv layout, k = 1
    layer(mean)  # builds the weight
    raw = rng.normal(size=event_shape).astype(np.float32)
    layer.raw_scale.assign(raw)
    x = rng.normal(size=(3,) + event_shape).astype(np.float32)
    dist = layer(mean)
    scale = np_softplus(raw) + 1e-2
    expected = np_normal_log_density(x, mean, scale, 3)
    np.testing.assert_allclose(dist.log_prob(x).numpy(), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dist.mean().numpy(), mean, rtol=1e-6)


def test_learned_variance_normal_gradients_reach_weight(rng):
    layer = D.LearnedVarianceNormal(5, initial_scale=1.0)
    mean = tf.zeros([16, 5])
    x = tf.constant(rng.normal(scale=0.1, size=(16, 5)), tf.float32)
    layer(mean)
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(layer(mean).log_prob(x))
    (grad,) = tape.gradient(loss, layer.trainable_weights)
    assert grad is not None and grad.shape == (5,)
    # The residuals are much smaller than the scale, so shrinking it lowers the loss.
    assert np.all(grad.numpy() > 0)
    assert len(layer.trainable_weights) == 1


def test_learned_variance_normal_rejects_initial_scale_below_floor():
    with pytest.raises(ValueError, match="initial_scale"):
        D.LearnedVarianceNormal(3, min_scale=0.1, initial_scale=0.05)


# ---------------------------------------------------------------------------
# Shared behaviour: config, shape checks, tf.function
# ---------------------------------------------------------------------------


LAYERS = [
    (lambda: D.DiagonalNormal((2, 3), min_scale=0.01, name="q_z"), (4, 12)),
    (lambda: D.Bernoulli((2, 2, 1)), (4, 2, 2, 1)),
    (lambda: D.Categorical(5, one_hot=True), (4, 5)),
    (lambda: D.RelaxedOneHotCategorical(5, temperature=0.3), (4, 5)),
    (lambda: D.LearnedVarianceNormal(6, min_scale=0.02, initial_scale=0.7), (4, 6)),
]


@pytest.mark.parametrize("make, input_shape", LAYERS)
def test_config_round_trip(rng, make, input_shape):
    layer = make()
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    # Also through Keras serialisation (the classes are registered).
    revived = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(revived) is type(layer)
    assert revived.get_config() == config
    params = rng.normal(size=input_shape).astype(np.float32)
    value = layer(params).sample(seed=1)
    np.testing.assert_allclose(
        clone(params).log_prob(value).numpy(), layer(params).log_prob(value).numpy(),
        rtol=1e-5,
    )


@pytest.mark.parametrize("make, input_shape", LAYERS)
def test_works_inside_tf_function(rng, make, input_shape):
    layer = make()
    params = tf.constant(rng.normal(size=input_shape), tf.float32)
    value = layer(params).sample(seed=2)

    @tf.function
    def log_prob(p, v):
        return layer(p).log_prob(v)

    np.testing.assert_allclose(
        log_prob(params, value).numpy(), layer(params).log_prob(value).numpy(), rtol=1e-5
    )


@pytest.mark.parametrize(
    "layer, bad_shape",
    [
        (D.DiagonalNormal(3), (2, 5)),
        (D.DiagonalNormal((4, 4, 1)), (2, 4, 4, 1)),  # needs C * 2 channels
        (D.Bernoulli((2, 2)), (2, 5)),
        (D.LearnedVarianceNormal(4), (2, 8)),
        (D.Categorical(3), (2, 4)),
        (D.RelaxedOneHotCategorical(3), (2, 2)),
    ],
)
def test_wrong_input_size_raises(layer, bad_shape):
    with pytest.raises(ValueError, match=type(layer).__name__):
        layer(np.zeros(bad_shape, np.float32))

    # The check uses static shapes, so it fires when a tf.function is traced.
    @tf.function(input_signature=[tf.TensorSpec([None] + list(bad_shape[1:]), tf.float32)])
    def traced(p):
        return layer(p).sample()

    with pytest.raises(ValueError, match="received"):
        traced.get_concrete_function()


@pytest.mark.parametrize(
    "make",
    [
        lambda: D.DiagonalNormal(0),
        lambda: D.DiagonalNormal((3, -1)),
        lambda: D.DiagonalNormal(3, min_scale=-1.0),
        lambda: D.Bernoulli("abc"),
        lambda: D.Categorical(1),
        lambda: D.Categorical(2.5),
    ],
)
def test_bad_constructor_arguments_raise(make):
    with pytest.raises(ValueError):
        make()
