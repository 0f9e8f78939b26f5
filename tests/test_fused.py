"""The fused kernels give the values and gradients of the plain TensorFlow ops they replace."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssvae import fused, networks

# XLA and Eigen evaluate exp and log with different polynomial approximations: both are
# within a few float32 ulps of the true value, so results agree to a small relative error.
RTOL, ATOL = 1e-5, 1e-6


def _values_and_gradient(function, a):
    a = tf.convert_to_tensor(a)
    with tf.GradientTape() as tape:
        tape.watch(a)
        value = function(a)
        # A non-uniform upstream gradient, so a wrong chain rule cannot pass.
        loss = tf.reduce_sum(value * tf.linspace(0.5, 2.0, value.shape[-1]))
    return value.numpy(), tape.gradient(loss, a).numpy()


def test_softplus_matches_tensorflow_including_large_inputs():
    a = np.concatenate([np.random.default_rng(0).normal(0, 4, size=(6, 50)),
                        np.array([[-200.0, -30.0, 0.0, 30.0, 200.0] * 10])]).astype(np.float32)
    got = _values_and_gradient(fused.softplus, a)
    want = _values_and_gradient(tf.nn.softplus, a)
    for g, w in zip(got, want):
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


def test_bernoulli_log_prob_value_and_gradients():
    rng = np.random.default_rng(1)
    x = tf.constant(rng.uniform(size=(5, 40)).astype(np.float32))  # grey levels
    logits = tf.constant(rng.normal(0, 5, size=(5, 40)).astype(np.float32))
    upstream = tf.constant(rng.normal(size=(5, 40)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, logits])
        got = fused.bernoulli_log_prob(x, logits)
        want = -tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits)
        got_loss, want_loss = tf.reduce_sum(got * upstream), tf.reduce_sum(want * upstream)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=RTOL, atol=ATOL)
    for variable in (x, logits):
        np.testing.assert_allclose(tape.gradient(got_loss, variable).numpy(),
                                   tape.gradient(want_loss, variable).numpy(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_bernoulli_log_prob_sum_value_and_gradient(dtype):
    rng = np.random.default_rng(3)
    x = tf.constant(rng.uniform(size=(6, 40)).astype(np.float32))
    logits = tf.cast(tf.constant(rng.normal(0, 5, size=(6, 40)).astype(np.float32)), dtype)
    # The reference sees the same (rounded) logits in float32.
    reference_logits = tf.cast(logits, tf.float32)
    upstream = tf.linspace(0.5, 2.0, 6)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([logits, reference_logits])
        got = fused.bernoulli_log_prob_sum(x, logits)
        want = -tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=reference_logits), -1)
        got_loss, want_loss = tf.reduce_sum(got * upstream), tf.reduce_sum(want * upstream)
    assert got.dtype == tf.float32 and got.shape == (6,)
    # The sum is float32 whatever the logits' dtype: a sum of 40 terms, each within RTOL.
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=RTOL, atol=40 * ATOL)
    gradient = tape.gradient(got_loss, logits)
    assert gradient.dtype == logits.dtype
    # float32: a few ulps of x - sigmoid(l) (at most 1) times an upstream of at most 2.
    # bfloat16 keeps 8 bits of mantissa: the derivative is rounded once (relative 2^-9)
    # and the product with the upstream gradient once more.
    rtol, atol = (RTOL, 2 * ATOL) if dtype == "float32" else (2 ** -7, 2 ** -8)
    np.testing.assert_allclose(tf.cast(gradient, tf.float32).numpy(),
                               tape.gradient(want_loss, reference_logits).numpy(), rtol=rtol, atol=atol)


def test_softplus_layer_uses_the_same_function_in_training_and_serving():
    layer = networks.Softplus(dtype="float32")
    a = tf.constant(np.linspace(-20, 20, 64, dtype=np.float32)[None])
    np.testing.assert_allclose(layer(a, training=True).numpy(), layer(a, training=False).numpy(),
                               rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_takes_the_steps_keras_adam_takes(amsgrad):
    rng = np.random.default_rng(2)
    shapes = [(30, 20), (20,), (7,)]
    start = [rng.normal(size=s).astype(np.float32) for s in shapes]
    gradients = [[tf.constant(rng.normal(size=s).astype(np.float32)) for s in shapes] for _ in range(5)]
    results = []
    for optimizer in (keras.optimizers.Adam(1e-2, amsgrad=amsgrad), fused.Adam(1e-2, amsgrad=amsgrad)):
        variables = [keras.Variable(v) for v in start]
        apply = tf.function(lambda g: optimizer.apply_gradients(zip(g, variables)))
        for g in gradients:
            apply(g)
        results.append([v.numpy() for v in variables])
    for plain, fast, initial in zip(*results, start):
        assert np.abs(plain - initial).max() > 1e-2  # five steps of 1e-2 moved every variable
        # Same arithmetic in another order: float32 rounding, far below one step's size.
        np.testing.assert_allclose(fast, plain, rtol=0, atol=1e-6)
