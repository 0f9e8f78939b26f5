"""Partially-specified graphical models: any structure trains, the estimator converges, M2 agrees, bad input."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfssvae import distributions, graph, models, objectives

tfd = tfp.distributions


class ChainModel(keras.Model):
    """A structure M2 does not have: q(z | x), then q(y | x, z) and q(c | z); two supervised
    variables, a discrete class y and a continuous "lighting" c; p(z) p(y | z) p(c | z) p(x | y, c, z)."""

    def __init__(self, dim=6, classes=3, latent=2):
        super().__init__()
        self.classes, self.latent = classes, latent
        self.q_z = keras.Sequential([keras.layers.Dense(16, "tanh"), keras.layers.Dense(2 * latent)])
        self.q_y = keras.layers.Dense(classes)
        self.q_c = keras.layers.Dense(2)
        self.p_y = keras.layers.Dense(classes)
        self.p_c = keras.layers.Dense(2)
        self.p_x = keras.Sequential([keras.layers.Dense(16, "tanh"), keras.layers.Dense(dim)])
        self.normal_z = distributions.DiagonalNormal(latent)
        self.normal_c = distributions.DiagonalNormal(1)
        self.bernoulli = distributions.Bernoulli(dim)

    def encode(self, q, x):
        z = q.variable("z", self.normal_z(self.q_z(x)))
        q.discrete("y", self.q_y(tf.concat([x, z], axis=-1)))
        q.variable("c", self.normal_c(self.q_c(z)))

    def decode(self, p, x):
        rows = tf.shape(x)[0]
        z = p.variable("z", tfd.Independent(tfd.Normal(tf.zeros([rows, self.latent]), 1.0), 1))
        y = p.discrete("y", self.p_y(z))
        c = p.variable("c", self.normal_c(self.p_c(z)))
        p.observe("x", self.bernoulli(self.p_x(tf.concat([y, c, z], axis=-1))), x)


def chain_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    c = rng.normal(size=(n, 1)).astype("float32")
    prototypes = rng.uniform(size=(3, 6))
    x = (rng.uniform(size=(n, 6)) < prototypes[y] * (c > 0) + 0.1).astype("float32")
    return x, y.astype("int32"), c, rng


@pytest.mark.parametrize("variant", ["weighted", "iw"])
def test_a_chain_with_two_partly_supervised_variables_trains(variant):
    keras.utils.set_random_seed(0)
    model = ChainModel()
    x, y, c, rng = chain_data()
    y_mask = tf.constant(rng.uniform(size=64) < 0.5)
    c_mask = tf.constant(rng.uniform(size=64) < 0.3)
    supervision = {"y": (y, y_mask), "c": (c, c_mask)}
    optimizer = keras.optimizers.Adam(1e-2)

    @tf.function
    def loss():
        result = objectives.partially_supervised_bound(model.encode, model.decode, x, supervision,
                                                       num_samples=3, alpha=1.0, variant=variant)
        return -tf.reduce_mean(result["bound"])

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            value = loss()
        gradients = tape.gradient(value, model.trainable_variables)
        optimizer.apply(gradients, model.trainable_variables)
        return value

    first = float(tf.reduce_mean([loss() for _ in range(20)]))
    for _ in range(150):
        step()
    last = float(tf.reduce_mean([loss() for _ in range(20)]))
    assert np.isfinite(first) and last < first - 0.5


def test_importance_sampled_log_q_y_converges_to_the_exact_value():
    """q(z | x) = N(m, s), q(y | x, z) = softmax(W z + b) with one-dimensional z: the exact
    log q(y | x) = log E_q(z|x) softmax(W z + b)_y is a one-dimensional integral."""
    m, s = np.array([0.3, -1.0], "float32"), np.array([1.2, 0.5], "float32")
    w, b = np.array([2.0, -1.0, 0.5], "float32"), np.array([0.0, 0.3, -0.2], "float32")
    y = np.array([1, 0], "int32")

    def encode(q, x):
        rows = tf.shape(x)[0]
        z = q.variable("z", tfd.Independent(tfd.Normal(tf.tile(m[:, None], [rows // 2, 1]),
                                                       tf.tile(s[:, None], [rows // 2, 1])), 1))
        q.discrete("y", z * w + b)

    def decode(p, x):
        rows = tf.shape(x)[0]
        p.variable("z", tfd.Independent(tfd.Normal(tf.zeros([rows, 1]), 1.0), 1))
        p.discrete("y", tf.zeros([rows, 3]))

    grid = np.linspace(-12, 12, 200001)
    exact = []
    for i in range(2):
        density = np.exp(-0.5 * ((grid - m[i]) / s[i]) ** 2) / (s[i] * math.sqrt(2 * math.pi))
        logits = grid[:, None] * w + b
        softmax = np.exp(logits - logits.max(1, keepdims=True))
        softmax /= softmax.sum(1, keepdims=True)
        exact.append(math.log(np.trapezoid(density * softmax[:, y[i]], grid)))
    exact = np.array(exact)

    x = tf.zeros([2, 1])
    supervision = {"y": (y, tf.constant([True, True]))}
    tf.random.set_seed(0)
    errors = {}
    for samples in (1, 10000):
        estimates = [objectives.partially_supervised_bound(encode, decode, x, supervision, num_samples=samples,
                                                           )["classification"].numpy() for _ in range(20)]
        errors[samples] = np.abs(np.mean(estimates, axis=0) - exact).max()
    # One sample is biased low by Jensen's inequality; many samples reach the integral.
    assert errors[10000] < 0.01
    assert errors[1] > 5 * errors[10000]


def m2_and_ssdgm_with_the_same_networks(kl_z_weight=1.0):
    keras.utils.set_random_seed(2)
    options = dict(latent_dim=2, hidden_units=(8,), alpha=0.5, kl_z_weight=kl_z_weight)
    ssdgm = models.SSDGMMnist((4, 4, 1), 3, **options)
    m2 = models.M2((4, 4, 1), 3, **options)
    for network in ("classifier", "encoder_trunk", "class_embedding", "encoder_head", "decoder_network"):
        getattr(m2, network).set_weights(getattr(ssdgm, network).get_weights())
    return m2, ssdgm


def normal_log_density(z, mean, scale):
    return np.sum(-0.5 * ((z - mean) / scale) ** 2 - np.log(scale) - 0.5 * math.log(2 * math.pi), axis=-1)


@pytest.mark.parametrize("analytic_kl, kl_z_weight", [(True, 1.0), (False, 1.0), (True, 3.0)])
@pytest.mark.parametrize("labelled", [True, False])
def test_the_general_objective_agrees_with_the_dedicated_m2_bound(labelled, analytic_kl, kl_z_weight):
    """With the same noise, the graph objective of ssdgm_mnist (class enumerated, S = 1) is
    M2's labelled bound L(x, y) + alpha log q(y | x), or M2's U(x): exactly M2's bound with
    the analytic KL of z (weighted alike by kl_z_weight), or with its single-sample estimate
    when analytic_kl is False."""
    m2, ssdgm = m2_and_ssdgm_with_the_same_networks(kl_z_weight)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(5, 4, 4, 1)).astype("float32")
    y = rng.integers(0, 3, 5).astype("int32")
    result = objectives.partially_supervised_bound(
        ssdgm.encode_graph, ssdgm.decode_graph, x, {"y": (y, tf.fill([5], labelled))}, alpha=0.5,
        enumerate=("y", 3), analytic_kl=analytic_kl, kl_weights={"z": kl_z_weight} if kl_z_weight != 1 else None)
    # The encoder's rows are the K = 3 copies of the batch, row k * 5 + b.
    q_z = result["q"].records["z"].distribution
    z = result["q"]["z"].numpy()
    mean, scale = q_z.mean().numpy(), q_z.stddev().numpy()
    noise = ((z - mean) / scale).reshape(3, 5, 2)
    single_sample_kl = (normal_log_density(z, mean, scale) - normal_log_density(z, 0.0, 1.0)).reshape(3, 5)
    log_q_y = tf.nn.log_softmax(m2.classifier(x)).numpy()

    def m2_bounds(copy_noise):
        """M2's per-class bounds [5, 3] for noise [5, 3, 2], with the KL of z the test asks for."""
        terms = m2.class_bounds(tf.constant(x), noise=tf.constant(copy_noise))
        return terms["bound"].numpy() if analytic_kl else terms["log_likelihood"].numpy() - math.log(3)

    if labelled:
        # Every copy holds the observed class: the bound averages M2's L(x, y) over K draws of z.
        per_copy = [m2_bounds(np.repeat(noise[k][:, None], 3, axis=1))[np.arange(5), y]
                    - (0.0 if analytic_kl else single_sample_kl[k]) for k in range(3)]
        expected = np.mean(per_copy, axis=0) + 0.5 * log_q_y[np.arange(5), y]
    else:
        # Copy k holds class k: M2's U(x) with that copy's noise for class k.
        bounds = m2_bounds(noise.transpose(1, 0, 2)) - (0.0 if analytic_kl else single_sample_kl.T)
        expected = objectives.marginalise_classes(tf.constant(bounds, tf.float32), tf.exp(log_q_y)).numpy()
    # float32 sums of ~20 terms of size ~10: 1e-5 relative, 1e-4 absolute near zero.
    np.testing.assert_allclose(result["bound"].numpy(), expected, rtol=1e-5, atol=1e-4)


def test_trace_reports_misuse_clearly():
    normal = tfd.Independent(tfd.Normal(tf.zeros([4, 2]), 1.0), 1)
    q = graph.Trace()
    q.variable("z", normal)
    with pytest.raises(ValueError, match="drawn twice"):
        q.variable("z", normal)
    with pytest.raises(ValueError, match="read before it is drawn"):
        q["y"]
    with pytest.raises(ValueError, match="expected shape .* to fit its distribution"):
        graph.Trace(supervision={"z": (tf.zeros([4, 3]), tf.ones([4], tf.bool))}).variable("z", normal)
    with pytest.raises(ValueError, match="expected a float32 tensor"):
        graph.Trace(supervision={"z": (tf.zeros([4, 2], tf.int32), tf.ones([4], tf.bool))}).variable("z", normal)
    with pytest.raises(ValueError, match="mask of 'z'"):
        graph.Trace(supervision={"z": (tf.zeros([4, 2]), tf.ones([5], tf.bool))}).variable("z", normal)
    with pytest.raises(ValueError, match="expected dtype bool"):
        graph.Trace(supervision={"z": (tf.zeros([4, 2]), tf.ones([4]))}).variable("z", normal)
    with pytest.raises(ValueError, match="one-hot"):
        graph.Trace(supervision={"y": (tf.zeros([4, 5]), tf.ones([4], tf.bool))}).discrete("y", tf.zeros([4, 3]))
    with pytest.raises(ValueError, match="temperature"):
        graph.Trace(temperature=0.0)


def test_objective_reports_misuse_clearly():
    model = ChainModel()
    x, y, c, _ = chain_data(n=4)
    mask = tf.ones([4], tf.bool)

    def decode_without_y(p, x):
        rows = tf.shape(x)[0]
        z = p.variable("z", tfd.Independent(tfd.Normal(tf.zeros([rows, 2]), 1.0), 1))
        p.observe("x", model.bernoulli(model.p_x(tf.concat([tf.zeros([rows, 4]), z], axis=-1))), x)

    with pytest.raises(ValueError, match="absent from the decoder"):
        objectives.partially_supervised_bound(model.encode, decode_without_y, x, {"y": (y, mask)})
    with pytest.raises(ValueError, match="never drawn by the encoder"):
        objectives.partially_supervised_bound(model.encode, model.decode, x, {"w": (y, mask)})
    with pytest.raises(ValueError, match="S >= 1"):
        objectives.partially_supervised_bound(model.encode, model.decode, x, {"y": (y, mask)}, num_samples=0)
    with pytest.raises(ValueError, match="mask of 'y'"):
        objectives.partially_supervised_bound(model.encode, model.decode, x, {"y": (y, tf.ones([4, 1], tf.bool))})
    with pytest.raises(ValueError, match="variant"):
        objectives.partially_supervised_bound(model.encode, model.decode, x, variant="mean")
    with pytest.raises(ValueError, match=r"kl_weights: \['w'\] are not latent variables"):
        objectives.partially_supervised_bound(model.encode, model.decode, x, kl_weights={"w": 2.0})
    with pytest.raises(ValueError, match="kl_weights: .* need the analytic KL"):
        objectives.partially_supervised_bound(model.encode, model.decode, x, variant="iw", kl_weights={"z": 2.0})
