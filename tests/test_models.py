"""M1, M2, M1+M2: the enumerated bound against an explicit per-class loop, Keras integration, bad input."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssvae import models, objectives

SHAPE = (8, 8, 1)
K = 10


def tiny_m2(**kwargs):
    keras.utils.set_random_seed(1)
    return models.M2(SHAPE, K, latent_dim=3, hidden_units=(16,), **kwargs)


def random_batch(n=6, labelled=(True, True, False, False, True, False), seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x": tf.constant(rng.uniform(size=(n, *SHAPE)).astype("float32")),
        "y": tf.constant(rng.integers(0, K, size=n).astype("int32")),
        "y_mask": tf.constant(labelled),
    }


def normal_kl_to_standard(mean, scale):
    """Closed form KL(N(mean, scale^2) || N(0, 1)), summed over the last axis."""
    return np.sum(0.5 * (mean**2 + scale**2 - 1.0) - np.log(scale), axis=-1)


def per_class_loop_bounds(model, x, noise, kl_z_weight=1.0):
    """L(x, y=k) computed one class at a time, the way the paper writes it (the KL of z weighted)."""
    columns = []
    for k in range(K):
        y = tf.one_hot(tf.fill([x.shape[0]], k), K)
        q = model.q_z(x, y)
        mean, scale = q.mean().numpy(), q.stddev().numpy()
        z = mean + scale * noise[:, k]
        log_px = model.p_x(y, tf.constant(z, tf.float32)).log_prob(x).numpy()
        columns.append(log_px - math.log(K) - kl_z_weight * normal_kl_to_standard(mean, scale))
    return np.stack(columns, axis=1)


def test_enumerated_unlabelled_bound_equals_per_class_loop():
    model = tiny_m2(alpha=0.0)
    batch = random_batch(labelled=(False,) * 6)
    noise = np.random.default_rng(3).standard_normal((6, K, 3)).astype("float32")

    loop = per_class_loop_bounds(model, batch["x"], noise)
    q_y = tf.nn.softmax(model.classifier(batch["x"])).numpy()
    unlabelled_loop = np.sum(q_y * loop, axis=1) - np.sum(q_y * np.log(q_y), axis=1)

    losses, _ = model.compute_losses(batch, noise=tf.constant(noise))
    # With alpha = 0 the loss is exactly -mean U(x).
    np.testing.assert_allclose(losses["loss"].numpy(), -unlabelled_loop.mean(), rtol=1e-5)
    np.testing.assert_allclose(
        losses["reconstruction"] + losses["kl_z"] + losses["kl_y"], losses["loss"], rtol=1e-5
    )


def test_labelled_bound_picks_the_observed_class():
    model = tiny_m2(alpha=0.0)
    batch = random_batch(labelled=(True,) * 6)
    noise = np.random.default_rng(4).standard_normal((6, K, 3)).astype("float32")
    loop = per_class_loop_bounds(model, batch["x"], noise)
    expected = -loop[np.arange(6), batch["y"].numpy()].mean()
    losses, _ = model.compute_losses(batch, noise=tf.constant(noise))
    np.testing.assert_allclose(losses["loss"].numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("kl_z_weight", [1.0, 3.0])
def test_mixed_batch_computes_labelled_rows_for_their_class_only_and_matches_the_loop(kl_z_weight):
    """The fast step (K rows per unlabelled example, one per labelled example, the image
    projected once) gives the naive all-classes enumeration's bound, example by example."""
    model = tiny_m2(alpha=0.0, kl_z_weight=kl_z_weight)
    labelled = (True, False, True, False, False, True)
    batch = random_batch(labelled=labelled)
    noise = np.random.default_rng(5).standard_normal((6, K, 3)).astype("float32")
    loop = per_class_loop_bounds(model, batch["x"], noise, kl_z_weight)
    q_y = tf.nn.softmax(model.classifier(batch["x"])).numpy()
    unlabelled = np.sum(q_y * loop, axis=1) - np.sum(q_y * np.log(q_y), axis=1)
    expected = np.where(labelled, loop[np.arange(6), batch["y"].numpy()], unlabelled)

    rows = objectives.class_rows(batch["y"], batch["y_mask"], K)
    assert rows.example.shape[0] == 3 * K + 3  # not 6 * K
    bound = objectives.enumerated_bound(model.row_bounds(batch["x"], rows, noise=tf.constant(noise))["bound"],
                                        model.classifier(batch["x"]), rows)
    # float32 sums of a few hundred terms of size ~50: agreement to 1e-5 relative.
    np.testing.assert_allclose(bound.numpy(), expected, rtol=1e-5)
    losses, _ = model.compute_losses(batch, noise=tf.constant(noise))
    np.testing.assert_allclose(losses["loss"].numpy(), -expected.mean(), rtol=1e-5)


def test_classification_weight_is_alpha_times_total_over_labelled():
    model = tiny_m2(alpha=0.1, num_examples=50_000, num_labelled=100)
    assert model.classification_weight == pytest.approx(50.0)
    batch = random_batch()
    noise = tf.zeros((6, K, 3))
    with_classification, _ = model.compute_losses(batch, noise=noise)
    logits = model.classifier(batch["x"])
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=batch["y"], logits=logits).numpy()
    labelled_ce = ce[batch["y_mask"].numpy()].mean()
    np.testing.assert_allclose(with_classification["classification"], labelled_ce, rtol=1e-5)
    model.classification_weight = 0.0
    without, _ = model.compute_losses(batch, noise=noise)
    # Per labelled example, averaged over the whole batch (labelled and unlabelled).
    np.testing.assert_allclose(
        with_classification["loss"] - without["loss"], 50.0 * ce[batch["y_mask"].numpy()].sum() / 6, rtol=1e-4
    )


def test_unobserved_labels_do_not_matter():
    model = tiny_m2()
    batch = random_batch()
    noise = tf.constant(np.random.default_rng(5).standard_normal((6, K, 3)).astype("float32"))
    other = dict(batch, y=tf.where(batch["y_mask"], batch["y"], (batch["y"] + 3) % K))
    a, _ = model.compute_losses(batch, noise=noise)
    b, _ = model.compute_losses(other, noise=noise)
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)


@pytest.mark.parametrize("name", ["m1", "m2", "m1m2"])
def test_keras_fit_trains_and_the_loss_falls(name):
    keras.utils.set_random_seed(0)
    model_class = models.model_class(name)
    if name == "m1m2":
        model = model_class(SHAPE, K, m1_latent_dim=4, m2_latent_dim=3, hidden_units=(32,))
        model.freeze_m1()
    else:
        model = model_class(SHAPE, K, latent_dim=3, hidden_units=(32,))
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    batch = random_batch(n=32, labelled=(True,) * 16 + (False,) * 16)
    dataset = tf.data.Dataset.from_tensors(batch).repeat(40)
    history = model.fit(dataset, epochs=1, verbose=0)
    first, _ = model.compute_losses(batch)
    history = model.fit(dataset, epochs=2, verbose=0)
    assert history.history["loss"][-1] < float(first["loss"])
    assert set(model.loss_names) <= set(history.history)


def test_m1_kl_z_weight_scales_the_kl_in_the_loss_and_nothing_else():
    batch = random_batch()
    losses = {}
    for weight in (1.0, 0.25):
        keras.utils.set_random_seed(3)  # the same weights and the same draw of z for both
        model = models.M1(SHAPE, K, latent_dim=3, hidden_units=(16,), kl_z_weight=weight)
        tf.random.set_seed(7)
        losses[weight] = {k: float(v) for k, v in model.compute_losses(batch)[0].items()}
    one, quarter = losses[1.0], losses[0.25]
    for name in ("reconstruction", "kl_z", "classification"):  # the same network, noise and data
        assert quarter[name] == pytest.approx(one[name], rel=1e-6)
    # loss = reconstruction + weight * KL + classification; float32 sums of a few hundred
    # nats round at about 1e-5 relative.
    assert one["loss"] - quarter["loss"] == pytest.approx(0.75 * one["kl_z"], rel=1e-3)
    with pytest.raises(ValueError, match="kl_z_weight: expected a positive weight"):
        models.M1(SHAPE, K, kl_z_weight=0.0)


def test_m1m2_keeps_the_active_m1_dimensions_and_rebuilds_from_its_config():
    keras.utils.set_random_seed(0)
    model = models.M1M2(SHAPE, K, m1_latent_dim=6, m2_latent_dim=3, hidden_units=(16,), active_threshold=0.05)
    images = np.random.default_rng(1).uniform(size=(64, *SHAPE)).astype("float32")
    model.m1.build_variables()
    # Make dimensions 1 and 4 constant over the data: the weights into their means vanish
    # (DiagonalNormal reads the parameters interleaved, loc of dimension i at 2 * i).
    output = model.m1.encoder.get_layer("encoder_output")
    kernel = output.kernel.numpy()
    kernel[:, [2, 8]] = 0.0
    output.kernel.assign(kernel)
    spread = model.m1.encode(images)["mean"].numpy().std(axis=0)
    expected = [d for d in range(6) if spread[d] > 0.05]
    assert 1 not in expected and 4 not in expected and expected  # the test itself is meaningful
    assert model.freeze_m1(images) == expected
    assert model.m2.data_shape == (len(expected),)
    probabilities = model.classify(images[:5])["probabilities"]
    assert probabilities.shape == (5, K)
    assert model.reconstruct(images[:5])["reconstruction"].shape == (5, *SHAPE)

    rebuilt = models.M1M2(**model.get_config())
    assert rebuilt.active_dims == expected and rebuilt.m2.data_shape == (len(expected),)
    model.build_variables()
    with pytest.raises(ValueError, match="before the stack is built"):
        model.freeze_m1(images)


def test_m1m2_with_no_active_dimension_says_so():
    model = models.M1M2(SHAPE, K, m1_latent_dim=4, m2_latent_dim=3, hidden_units=(16,), active_threshold=10.0)
    images = np.random.default_rng(2).uniform(size=(32, *SHAPE)).astype("float32")
    with pytest.raises(ValueError, match="no M1 latent dimension has a posterior-mean standard deviation above"):
        model.freeze_m1(images)


def test_m1m2_trains_only_m2():
    keras.utils.set_random_seed(0)
    model = models.M1M2(SHAPE, K, m1_latent_dim=4, m2_latent_dim=3, hidden_units=(16,))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.build_variables()
    model.freeze_m1()
    m1_before = [w.numpy().copy() for w in model.m1.weights]
    m2_before = [w.numpy().copy() for w in model.m2.trainable_weights]
    model.fit(tf.data.Dataset.from_tensors(random_batch()).repeat(3), epochs=1, verbose=0)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(m1_before, model.m1.weights))
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(m2_before, model.m2.trainable_weights))


def test_classifier_and_encoder_drop_into_a_users_functional_model():
    model = tiny_m2()
    images = keras.Input(SHAPE)
    probabilities = keras.layers.Softmax()(model.classifier(images))
    user_model = keras.Model(images, probabilities)
    user_model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    batch = random_batch(n=16, labelled=(True,) * 16)
    before = [w.numpy().copy() for w in model.classifier.weights]
    user_model.fit(batch["x"], batch["y"], epochs=2, verbose=0)
    # The user's model trained the very layers M2 uses for q(y | x).
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(before, model.classifier.weights))

    m1 = models.M1(SHAPE, K, latent_dim=3, hidden_units=(16,))
    features = m1.encoder(images)
    head = keras.layers.Dense(K, activation="softmax")(features)
    user_model = keras.Model(images, head)
    user_model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = user_model.fit(batch["x"], batch["y"], epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_serving_methods_have_documented_shapes():
    model = tiny_m2()
    x = np.random.default_rng(0).uniform(size=(5, *SHAPE)).astype("float32")
    classified = model.classify(x)
    np.testing.assert_allclose(classified["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)
    assert classified["class"].shape == (5,)
    code = model.encode(x)
    assert code["mean"].shape == (5, 3) and (code["scale"].numpy() > 0).all()
    assert model.reconstruct(x)["reconstruction"].shape == (5, *SHAPE)
    generated = model.generate(tf.constant([0, 9]), tf.zeros([2, 3]))["images"].numpy()
    assert generated.shape == (2, *SHAPE) and generated.min() >= 0 and generated.max() <= 1


@pytest.mark.parametrize(
    "images, match",
    [
        (np.zeros((2, 9, 9, 1), "float32"), "expected shape"),
        (np.zeros((8, 8, 1), "float32"), "expected rank"),
        (np.zeros((2, 64), "float32"), "expected rank"),
    ],
)
def test_wrong_image_shape_is_a_value_error(images, match):
    model = tiny_m2()
    with pytest.raises(ValueError, match=match):
        model.classify(images)
    with pytest.raises(ValueError, match=match):
        model.compute_losses({"x": images, "y": np.zeros(2, "int32"), "y_mask": np.ones(2, bool)})


def test_bad_generate_and_constructor_arguments_are_value_errors():
    model = tiny_m2()
    with pytest.raises(ValueError, match=r"labels: expected values in \[0, 10\)"):
        model.generate(tf.constant([0, 10]), tf.zeros([2, 3]))
    with pytest.raises(ValueError, match="latent"):
        model.generate(tf.constant([0, 1]), tf.zeros([2, 4]))
    with pytest.raises(ValueError, match="model: expected one of"):
        models.model_class("m3")
    with pytest.raises(ValueError, match="likelihood"):
        models.M2(SHAPE, K, likelihood="poisson")
    with pytest.raises(ValueError, match="num_classes"):
        models.M2(SHAPE, 1)
    with pytest.raises(ValueError, match="kl_z_weight: expected a positive weight"):
        models.M2(SHAPE, K, kl_z_weight=0.0)


def test_a_bfloat16_step_gives_the_float32_loss_within_bfloat16_rounding():
    """Keras' mixed_bfloat16 policy: the networks compute in bfloat16 (8-bit mantissa), the
    densities and losses in float32; with the same weights and noise the loss moves by
    bfloat16 rounding only."""
    from tfssvae import training

    batch = random_batch(n=8, labelled=(True, False) * 4)
    noise = tf.constant(np.random.default_rng(6).standard_normal((8, K, 3)).astype("float32"))
    reference = tiny_m2()
    want, _ = reference.compute_losses(batch, noise=noise)
    training.set_precision("bfloat16")
    try:
        mixed = tiny_m2()
        mixed.set_weights(reference.get_weights())
        assert mixed.decoder_network.compute_dtype == "bfloat16"
        got, probabilities = mixed.compute_losses(batch, noise=noise)
    finally:
        training.set_precision("float32")
    assert got["loss"].dtype == tf.float32 and probabilities.dtype == tf.float32
    # bfloat16 keeps ~3 significant digits (relative rounding 2^-9); summed over many pixels
    # the errors largely cancel (measured 1e-4 on the loss, 3e-3 on the small KL term).
    # 2e-3 on the loss is 10x that, and below a wrong term's size (the KL alone is ~3 %).
    np.testing.assert_allclose(got["loss"].numpy(), want["loss"].numpy(), rtol=2e-3)
    np.testing.assert_allclose(got["reconstruction"].numpy(), want["reconstruction"].numpy(), rtol=2e-3)
    np.testing.assert_allclose(got["kl_z"].numpy(), want["kl_z"].numpy(), rtol=2e-2)
