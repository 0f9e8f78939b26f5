"""Tests for tfssvae.networks: output shapes, inputs, use in user models, bad args."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssvae import distributions as D
from tfssvae import networks as N

TINY = dict(filters=(4, 4, 4, 4), dense_units=8)


def test_mlp_single_input_takes_a_tensor():
    model = N.mlp([(6,)], output_units=3, hidden_units=(5, 4))
    assert isinstance(model, keras.Model)
    assert len(model.inputs) == 1
    out = model(np.zeros((2, 6), np.float32))
    assert out.shape == (2, 3)
    dense = [l for l in model.layers if isinstance(l, keras.layers.Dense)]
    assert [l.units for l in dense] == [5, 4, 3]
    assert dense[-1].activation is keras.activations.linear


def test_mlp_multiple_inputs_are_flattened_and_concatenated():
    model = N.mlp([(4, 4, 1), (3,), 2], output_units=7, hidden_units=(5,), name="enc")
    assert model.name == "enc"
    assert len(model.inputs) == 3
    out = model([np.zeros((2, 4, 4, 1)), np.zeros((2, 3)), np.zeros((2, 2))])
    assert out.shape == (2, 7)
    first = [l for l in model.layers if isinstance(l, keras.layers.Dense)][0]
    assert first.kernel.shape == (16 + 3 + 2, 5)


def test_mlp_without_hidden_layers_is_affine():
    model = N.mlp([(3,)], output_units=2, hidden_units=())
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    kernel, bias = model.layers[-1].get_weights()
    np.testing.assert_allclose(model(x).numpy(), x @ kernel + bias, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("extras", [(), ((3,),), ((3,), (2,))])
def test_conv_encoder_shapes(extras):
    model = N.conv_encoder((8, 8, 1), output_units=6, extra_input_shapes=extras, **TINY)
    image = np.zeros((2, 8, 8, 1), np.float32)
    if extras:
        assert len(model.inputs) == 1 + len(extras)
        out = model([image] + [np.zeros((2,) + s, np.float32) for s in extras])
    else:
        assert len(model.inputs) == 1
        out = model(image)
    assert out.shape == (2, 6)


def test_conv_encoder_default_architecture():
    model = N.conv_encoder((64, 64, 1), output_units=10)
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [32, 32, 64, 64]
    assert all(c.strides == (2, 2) and c.kernel_size == (4, 4) for c in convs)
    assert model.output_shape == (None, 10)
    dense = [l for l in model.layers if isinstance(l, keras.layers.Dense)]
    assert [l.units for l in dense] == [256, 10]


@pytest.mark.parametrize("size", [8, 28, 32, 64])
@pytest.mark.parametrize("params_per_pixel", [1, 2])
def test_conv_decoder_output_shape(size, params_per_pixel):
    channels = 3 if size == 32 else 1
    model = N.conv_decoder(
        [(4,)], (size, size, channels), params_per_pixel=params_per_pixel, **TINY
    )
    expected = (size, size, channels * params_per_pixel)
    assert model.output_shape == (None,) + expected
    out = model(np.zeros((2, 4), np.float32))
    assert out.shape == (2,) + expected


def test_conv_decoder_non_square_and_multiple_inputs():
    model = N.conv_decoder([(4,), (3,)], (28, 20, 1), filters=(4, 4), dense_units=8)
    assert len(model.inputs) == 2
    out = model([np.zeros((2, 4)), np.zeros((2, 3))])
    assert out.shape == (2, 28, 20, 1)


def test_conv_decoder_output_feeds_distribution_layers():
    image_shape = (28, 28, 1)
    z = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    decoder = N.conv_decoder([(4,)], image_shape, params_per_pixel=2, **TINY)
    dist = D.DiagonalNormal(image_shape)(decoder(z))
    assert dist.batch_shape == (3,) and dist.event_shape == image_shape
    decoder = N.conv_decoder([(4,)], image_shape, params_per_pixel=1, **TINY)
    dist = D.Bernoulli(image_shape)(decoder(z))
    assert dist.log_prob(np.full((3,) + image_shape, 0.3, np.float32)).shape == (3,)
    mlp_decoder = N.mlp([(4,)], D.Bernoulli.params_size(image_shape), hidden_units=(8,))
    assert D.Bernoulli(image_shape)(mlp_decoder(z)).event_shape == image_shape


def test_builders_inside_user_functional_model_fit():
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1))
    label = keras.Input((3,))
    encoder = N.conv_encoder(
        (8, 8, 1), 4, filters=(4, 4), dense_units=8, extra_input_shapes=[(3,)]
    )
    decoder = N.conv_decoder([(4,)], (8, 8, 1), filters=(4, 4), dense_units=8)
    head = N.mlp([(4,)], 3, hidden_units=(8,), name="head")
    code = encoder([image, label])
    recon = keras.layers.Activation("sigmoid")(decoder(code))
    logits = head(code)
    model = keras.Model([image, label], [recon, logits])
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=["mse", keras.losses.CategoricalCrossentropy(from_logits=True)],
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(16, 8, 8, 1)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, size=16)]
    before = [w.copy() for w in encoder.get_weights()]
    history = model.fit([x, y], [x, y], batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert any(not np.allclose(a, b) for a, b in zip(before, encoder.get_weights()))


@pytest.mark.parametrize(
    "build",
    [
        lambda: N.mlp([], 3),
        lambda: N.mlp((), 3),
        lambda: N.mlp(None, 3),
        lambda: N.mlp([(4,)], 0),
        lambda: N.mlp([(4,)], -2),
        lambda: N.mlp([(4,)], 3, hidden_units=(5, 0)),
        lambda: N.mlp([(0,)], 3),
        lambda: N.mlp([(4,)], 3, activation="no_such_activation"),
        lambda: N.conv_encoder((8, 8), 3),
        lambda: N.conv_encoder((8, 8, 1, 1), 3),
        lambda: N.conv_encoder((8, 8, 1), 0),
        lambda: N.conv_encoder((8, 8, 1), 3, activation="no_such_activation"),
        lambda: N.conv_encoder((8, 8, 1), 3, kernel_size=0),
        lambda: N.conv_encoder((8, 8, 1), 3, extra_input_shapes=[(0,)]),
        lambda: N.conv_decoder([], (8, 8, 1)),
        lambda: N.conv_decoder([(4,)], (8, 8)),
        lambda: N.conv_decoder([(4,)], (8, 8, 1), params_per_pixel=0),
        lambda: N.conv_decoder([(4,)], (8, 8, 1), filters=()),
        lambda: N.conv_decoder([(4,)], (8, 8, 1), strides=0),
        lambda: N.conv_decoder([(4,)], (8, 8, 1), dense_units=-1),
        lambda: N.conv_decoder([(4,)], (8, 8, 1), activation="no_such_activation"),
    ],
)
def test_bad_arguments_raise_value_error(build):
    with pytest.raises(ValueError):
        build()


def test_models_work_inside_tf_function():
    encoder = N.conv_encoder((8, 8, 1), 4, filters=(4,), dense_units=8)
    decoder = N.conv_decoder([(4,)], (8, 8, 1), filters=(4,), dense_units=8)

    @tf.function
    def roundtrip(x):
        return decoder(encoder(x))

    assert roundtrip(tf.zeros([2, 8, 8, 1])).shape == (2, 8, 8, 1)


# ---------------------------------------------------------------------------
# CodeDense and deconv_decoder (the CascadeVAE's decoder)
# ---------------------------------------------------------------------------


def test_code_dense_is_the_dense_layer_over_the_concatenation():
    layer = N.CodeDense(5, 3, activation="relu", name="first")
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 6)).astype(np.float32)
    code = np.eye(3, dtype=np.float32)[[0, 2, 1, 2]]
    out = layer([z, code]).numpy()
    kernel, bias = layer.get_weights()
    assert kernel.shape == (9, 5)
    # float32 matmuls over 9 terms, summed in a different order: 1e-5 is ample.
    np.testing.assert_allclose(out, np.maximum(np.concatenate([z, code], 1) @ kernel + bias, 0), rtol=1e-5, atol=1e-6)
    every = layer.every_code(z).numpy()
    assert every.shape == (4, 3, 5)
    for k in range(3):
        expected = layer([z, np.tile(np.eye(3, dtype=np.float32)[k], (4, 1))]).numpy()
        np.testing.assert_allclose(every[:, k], expected, rtol=1e-5, atol=1e-6)
    assert np.ptp(every, axis=1).max() > 1e-2  # the codes change the output


def test_code_dense_in_a_functional_model_and_its_config():
    z, code = keras.Input((6,)), keras.Input((3,))
    layer = N.CodeDense(5, 3, kernel_regularizer=keras.regularizers.L2(0.5))
    model = keras.Model([z, code], layer([z, code]))
    assert model.output_shape == (None, 5)
    assert float(model.losses[0]) == pytest.approx(0.5 * float(np.sum(np.square(layer.kernel.numpy()))), rel=1e-5)
    clone = N.CodeDense.from_config(layer.get_config())
    assert clone.units == 5 and clone.code_size == 3
    with pytest.raises(ValueError, match="code of size 3"):
        N.CodeDense(5, 3)([np.zeros((2, 6), np.float32), np.zeros((2, 4), np.float32)])


def test_deconv_decoder_ends_with_the_transposed_conv_to_the_image():
    model = N.deconv_decoder(16, (64, 64, 1), filters=(8, 4, 4))
    assert model.output_shape == (None, 64, 64, 1)
    layers = [l for l in model.layers if isinstance(l, (keras.layers.Dense, keras.layers.Conv2DTranspose))]
    assert [type(l).__name__ for l in layers] == ["Dense", "Conv2DTranspose", "Conv2DTranspose",
                                                   "Conv2DTranspose", "Conv2DTranspose"]
    assert layers[0].units == 4 * 4 * 8 and layers[-1].filters == 1
    assert not any(isinstance(l, keras.layers.Conv2D) and not isinstance(l, keras.layers.Conv2DTranspose)
                   for l in model.layers)
    assert N.deconv_decoder(4, (32, 16, 3), params_per_pixel=2, filters=(4,)).output_shape == (None, 32, 16, 6)
    with pytest.raises(ValueError, match="divisible by .* 16"):
        N.deconv_decoder(4, (28, 28, 1), filters=(4, 4, 4))


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_replay_gives_the_gradients_of_the_decoder_from_a_stored_pass(policy):
    # The backward pass through stored layer outputs must equal autodiff through the decoder, in
    # eager mode and inside tf.function (where the replayed layers' forward ops are pruned).
    previous = keras.config.dtype_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = N.deconv_decoder(8, (16, 16, 1), filters=(4, 3), conv_initializer="he_normal")
    finally:
        keras.mixed_precision.set_global_policy(previous)
    rng = np.random.default_rng(0)
    inputs = tf.constant(rng.normal(size=(5, 8)), tf.float32)
    weights = tf.constant(rng.normal(size=(5, 16, 16, 1)), tf.float32)  # a loss that weighs every pixel

    def gradients(use_replay):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            if use_replay:
                out = N.replay(model, inputs, N.layer_outputs(model, inputs))
            else:
                out = model(inputs)
            loss = tf.reduce_sum(tf.cast(out, tf.float32) * weights)
        return [loss] + tape.gradient(loss, [inputs] + model.trainable_variables)

    want = gradients(False)
    # ReLUs active and inactive, so a wrong mask shows.
    assert 0.1 < float(np.mean(N.layer_outputs(model, inputs)[0].numpy() > 0)) < 0.9
    # The same ops on the same stored values, in float32 summed in the same order (1e-5 covers
    # the order); bfloat16 rounds each product to 8 bits (2^-9 relative): 2e-2 of the largest
    # entry, while a wrong mask, layer or missing bias moves gradients by order one.
    tolerance = 1e-5 if policy == "float32" else 2e-2
    for got in (gradients(True), tf.function(lambda: gradients(True))()):
        assert len(got) == len(want) and got[1].dtype == want[1].dtype
        for g, w in zip(got, want):
            scale = float(tf.reduce_max(tf.abs(tf.cast(w, tf.float32))))
            np.testing.assert_allclose(np.asarray(tf.cast(g, tf.float32)), np.asarray(tf.cast(w, tf.float32)),
                                       rtol=tolerance, atol=tolerance * scale)
    with pytest.raises(ValueError, match="expected 5 layer outputs"):
        N.replay(model, inputs, N.layer_outputs(model, inputs)[:-1])
    with pytest.raises(ValueError, match="replays Dense, Conv2DTranspose"):
        N.replay(N.mlp([(8,)], 4, hidden_units=(3,)), inputs, [])


def test_conv_encoder_initializer_and_regularizer_options():
    plain = N.conv_encoder((8, 8, 1), 4, **TINY)
    assert not plain.losses
    model = N.conv_encoder((8, 8, 1), 4, conv_initializer="he_normal", kernel_regularizer=keras.regularizers.L2(1e-3),
                           **TINY)
    assert len(model.losses) == 4 + 2  # every conv and dense kernel
    conv = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)][0]
    assert isinstance(conv.kernel_initializer, keras.initializers.HeNormal)


def test_a_bfloat16_activation_enters_a_network_without_conversions():
    # Under mixed_bfloat16 one network's bfloat16 output (M2's encoder rows) feeds the next:
    # the network must not convert it to float32 at its input and back at its first layer.
    previous = keras.config.dtype_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        net = N.mlp([(8,)], 4, hidden_units=(), name="head")
    finally:
        keras.mixed_precision.set_global_policy(previous)
    graph = tf.function(lambda h: net(h)).get_concrete_function(tf.TensorSpec([None, 8], tf.bfloat16)).graph
    casts = [op for op in graph.get_operations() if op.type == "Cast" and op.inputs[0].dtype == tf.bfloat16]
    assert casts == [], [op.name for op in casts]
    assert net(tf.ones([2, 8], tf.bfloat16)).dtype == tf.bfloat16
