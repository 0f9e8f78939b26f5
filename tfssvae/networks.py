"""Encoder and decoder builders shared by every model.

Each builder returns a functional ``keras.Model`` whose outputs are plain tensors
(distribution parameters or logits), so it can be used inside a model of this package
or dropped into a user's own functional Keras model. Turn the outputs into
distributions with the layers of :mod:`tfssvae.distributions`; the decoders' output
layout ``[batch, height, width, channels * params_per_pixel]`` is the layout those
layers expect.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from tfssvae import fused

__all__ = [
    "mlp", "conv_encoder", "conv_decoder", "deconv_decoder", "activation_layer", "Softplus", "CodeDense",
    "layer_outputs", "replay",
]


# ---------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _positive_int(name, value):
    """Checks that ``value`` is an int > 0 and returns it."""
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{name} must be a positive int; received {value!r}.")
    return int(value)


def _positive_ints(name, values, allow_empty=True):
    """Checks that ``values`` is a sequence of ints > 0 and returns it as a tuple."""
    if _is_int(values):
        values = (values,)
    try:
        values = tuple(values)
    except TypeError:
        raise ValueError(
            f"{name} must be a sequence of positive ints; received {values!r}."
        ) from None
    if not allow_empty and not values:
        raise ValueError(f"{name} must not be empty; received {values!r}.")
    if any(not _is_int(v) or v <= 0 for v in values):
        raise ValueError(f"{name} must contain positive ints only; received {values!r}.")
    return tuple(int(v) for v in values)


def _shape(name, shape):
    """Checks one input shape (no batch dim); an int ``n`` means ``(n,)``."""
    if _is_int(shape):
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        raise ValueError(
            f"{name} must be a shape (tuple of positive ints without the batch "
            f"dimension); received {shape!r}."
        ) from None
    if not shape or any(not _is_int(d) or d <= 0 for d in shape):
        raise ValueError(
            f"{name} must be a non-empty tuple of positive ints (no batch dimension); "
            f"received {shape!r}."
        )
    return tuple(int(d) for d in shape)


def _shapes(name, shapes, allow_empty=False):
    """Checks a list of input shapes and returns it as a list of tuples."""
    if shapes is None or isinstance(shapes, (str, bytes)):
        raise ValueError(f"{name} must be a list of shapes; received {shapes!r}.")
    try:
        shapes = list(shapes)
    except TypeError:
        raise ValueError(f"{name} must be a list of shapes; received {shapes!r}.") from None
    if not shapes and not allow_empty:
        raise ValueError(f"{name} must contain at least one shape; received [].")
    return [_shape(f"{name}[{i}]", s) for i, s in enumerate(shapes)]


def _image_shape(image_shape):
    """Checks that ``image_shape`` is ``(height, width, channels)``."""
    try:
        shape = tuple(image_shape)
    except TypeError:
        shape = None
    if shape is None or len(shape) != 3 or any(not _is_int(d) or d <= 0 for d in shape):
        raise ValueError(
            f"image_shape must be (height, width, channels) with positive ints; "
            f"received {image_shape!r}."
        )
    return tuple(int(d) for d in shape)


def _activation(activation):
    """Checks that Keras knows ``activation`` and returns it unchanged."""
    try:
        keras.activations.get(activation)
    except Exception as error:  # Keras raises ValueError or TypeError.
        raise ValueError(
            f"activation must be a Keras activation name or callable; "
            f"received {activation!r} ({error})."
        ) from None
    return activation


@keras.saving.register_keras_serializable(package="tfssvae")
class Softplus(keras.layers.Layer):
    """softplus: ``fused.softplus`` while training (value and gradient in one XLA pass),
    ``tf.nn.softplus`` in float32 otherwise, so exported graphs need no XLA."""

    def call(self, inputs, training=None):
        if training:
            return fused.softplus(inputs)
        return tf.cast(tf.nn.softplus(tf.cast(inputs, tf.float32)), inputs.dtype)


def activation_layer(activation, name=None):
    """A layer applying ``activation``; ``"softplus"`` gets the fused ``Softplus``.

    Under a mixed policy the arithmetic is float32 (TensorFlow's CPU kernels for
    transcendental functions are several times slower in bfloat16): ``Softplus`` converts
    inside its fused kernel and keeps the policy's bfloat16 storage, so no separate cast
    passes; other activations run as float32 layers.
    """
    if activation == "softplus":
        return Softplus(name=name)
    return keras.layers.Activation(activation, dtype="float32", name=name)


# ---------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------


def _input(shape, name):
    """``keras.Input`` in the compute dtype of the Keras policy the network is built under.

    A functional model converts each input to its ``keras.Input``'s dtype: with float32
    inputs, a bfloat16 activation passed from one network to the next under
    ``mixed_bfloat16`` would be converted to float32 and back by the first layer (two
    passes each way, e.g. over M2's 2,100 x 500 encoder rows every step).  Float32 data
    is converted once, where the first layer would convert it anyway.
    """
    return keras.Input(shape=shape, name=name, dtype=keras.config.dtype_policy().compute_dtype)


def _vector_inputs(shapes, name):
    """Creates one ``keras.Input`` per shape; returns (inputs, flat concatenation)."""
    inputs = [_input(shape, f"{name}_input_{i}") for i, shape in enumerate(shapes)]
    flat = [
        x if len(shape) == 1 else keras.layers.Flatten(name=f"{name}_flatten_{i}")(x)
        for i, (x, shape) in enumerate(zip(inputs, shapes))
    ]
    if len(flat) == 1:
        return inputs, flat[0]
    return inputs, keras.layers.Concatenate(axis=-1, name=f"{name}_concat")(flat)


def mlp(input_shapes, output_units, hidden_units=(500,), activation="softplus", name="mlp"):
    """Multi-layer perceptron over one or more concatenated inputs.

    Each input is flattened, all are concatenated, then each width in
    ``hidden_units`` gives a ``Dense(width, activation)`` and a linear
    ``Dense(output_units)`` ends the network.

    Args:
      input_shapes: list of input shapes without the batch dimension, e.g.
        ``[(28, 28, 1), (10,)]``; an int ``n`` in the list means ``(n,)``.
      output_units: size of the output.
      hidden_units: widths of the hidden layers (may be empty for a linear map).
      activation: Keras activation of the hidden layers.
      name: model name.

    Returns:
      A ``keras.Model`` mapping ``[batch, *input_shapes[0]]`` (a single tensor when
      there is one input, else a list with one tensor per shape) to
      ``[batch, output_units]``.
    """
    shapes = _shapes("input_shapes", input_shapes)
    output_units = _positive_int("output_units", output_units)
    hidden_units = _positive_ints("hidden_units", hidden_units)
    activation = _activation(activation)

    inputs, h = _vector_inputs(shapes, name)
    for i, units in enumerate(hidden_units):
        h = keras.layers.Dense(units, name=f"{name}_hidden_{i}")(h)
        h = activation_layer(activation, name=f"{name}_activation_{i}")(h)
    outputs = keras.layers.Dense(output_units, name=f"{name}_output")(h)
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs, name=name)


def conv_encoder(
    image_shape,
    output_units,
    filters=(32, 32, 64, 64),
    kernel_size=4,
    strides=2,
    dense_units=256,
    activation="relu",
    extra_input_shapes=(),
    conv_initializer="glorot_uniform",
    kernel_regularizer=None,
    name="conv_encoder",
):
    """Convolutional encoder: strided convs, flatten, (extras), dense, linear output.

    One ``Conv2D(f, kernel_size, strides, padding="same", activation)`` per entry of
    ``filters``; the feature map is flattened, the extra vector inputs (e.g. a one-hot
    class) are flattened and concatenated to it, then ``Dense(dense_units, activation)``
    and a linear ``Dense(output_units)``.

    Args:
      image_shape: ``(height, width, channels)``.
      output_units: size of the output.
      filters: number of filters of each conv layer.
      kernel_size: conv kernel size.
      strides: conv stride.
      dense_units: width of the dense layer after the convs; 0 for none (the
        flattened features go straight to the linear output layer).
      activation: Keras activation of the hidden layers.
      extra_input_shapes: shapes of extra inputs (no batch dim), concatenated after
        flattening; an int ``n`` means ``(n,)``.
      conv_initializer: Keras initializer of the conv kernels (the dense layers keep
        Keras' default, Glorot uniform); e.g. ``"he_normal"`` for ReLU convs.
      kernel_regularizer: Keras regularizer of every kernel (conv and dense), or None.
      name: model name.

    Returns:
      A ``keras.Model`` mapping an image ``[batch, height, width, channels]`` (or the
      list ``[image, *extras]`` when there are extra inputs) to
      ``[batch, output_units]``.
    """
    image_shape = _image_shape(image_shape)
    output_units = _positive_int("output_units", output_units)
    filters = _positive_ints("filters", filters)
    kernel_size = _positive_int("kernel_size", kernel_size)
    strides = _positive_int("strides", strides)
    dense_units = 0 if dense_units == 0 else _positive_int("dense_units", dense_units)
    activation = _activation(activation)
    extra_shapes = _shapes("extra_input_shapes", extra_input_shapes, allow_empty=True)

    image = _input(image_shape, f"{name}_image")
    h = image
    for i, f in enumerate(filters):
        h = keras.layers.Conv2D(
            f, kernel_size, strides=strides, padding="same", activation=activation,
            kernel_initializer=conv_initializer, kernel_regularizer=kernel_regularizer,
            name=f"{name}_conv_{i}",
        )(h)
    h = keras.layers.Flatten(name=f"{name}_flatten")(h)
    inputs = [image]
    if extra_shapes:
        extras, extra = _vector_inputs(extra_shapes, f"{name}_extra")
        inputs += extras
        h = keras.layers.Concatenate(axis=-1, name=f"{name}_concat")([h, extra])
    if dense_units:
        h = keras.layers.Dense(dense_units, activation=activation, kernel_regularizer=kernel_regularizer,
                               name=f"{name}_dense")(h)
    outputs = keras.layers.Dense(output_units, kernel_regularizer=kernel_regularizer, name=f"{name}_output")(h)
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs, name=name)


def conv_decoder(
    input_shapes,
    image_shape,
    params_per_pixel=1,
    filters=(64, 64, 32, 32),
    kernel_size=4,
    strides=2,
    dense_units=256,
    activation="relu",
    name="conv_decoder",
):
    """Convolutional decoder from vectors to per-pixel distribution parameters.

    The vector inputs are concatenated, go through ``Dense(dense_units, activation)``
    and a dense layer to a small feature map of spatial size
    ``ceil(height / strides**n) x ceil(width / strides**n)`` with ``filters[0]``
    channels (``n = len(filters)``). One ``Conv2DTranspose(f, kernel_size, strides,
    padding="same", activation)`` per entry of ``filters`` upsamples it to at least
    ``height x width``; any excess is cropped (centred), and a linear
    ``Conv2D(channels * params_per_pixel, kernel_size, padding="same")`` gives the
    output.

    Args:
      input_shapes: list of input shapes without the batch dimension, e.g.
        ``[(latent_dim,), (num_classes,)]``; an int ``n`` means ``(n,)``.
      image_shape: ``(height, width, channels)`` of the output images.
      params_per_pixel: distribution parameters per pixel and channel (1 for
        Bernoulli logits, 2 for a Normal's loc and raw scale).
      filters: number of filters of each transposed conv layer (at least one).
      kernel_size: conv kernel size.
      strides: transposed conv stride.
      dense_units: width of the first dense layer.
      activation: Keras activation of the hidden layers.
      name: model name.

    Returns:
      A ``keras.Model`` mapping ``[batch, *input_shapes[0]]`` (a single tensor when
      there is one input, else a list) to
      ``[batch, height, width, channels * params_per_pixel]``.
    """
    shapes = _shapes("input_shapes", input_shapes)
    height, width, channels = _image_shape(image_shape)
    params_per_pixel = _positive_int("params_per_pixel", params_per_pixel)
    filters = _positive_ints("filters", filters, allow_empty=False)
    kernel_size = _positive_int("kernel_size", kernel_size)
    strides = _positive_int("strides", strides)
    dense_units = _positive_int("dense_units", dense_units)
    activation = _activation(activation)

    factor = strides ** len(filters)
    start_h = math.ceil(height / factor)
    start_w = math.ceil(width / factor)

    inputs, h = _vector_inputs(shapes, name)
    h = keras.layers.Dense(dense_units, activation=activation, name=f"{name}_dense")(h)
    h = keras.layers.Dense(
        start_h * start_w * filters[0], activation=activation, name=f"{name}_dense_map"
    )(h)
    h = keras.layers.Reshape((start_h, start_w, filters[0]), name=f"{name}_reshape")(h)
    for i, f in enumerate(filters):
        h = keras.layers.Conv2DTranspose(
            f, kernel_size, strides=strides, padding="same", activation=activation,
            name=f"{name}_deconv_{i}",
        )(h)
    extra_h = start_h * factor - height
    extra_w = start_w * factor - width
    if extra_h or extra_w:
        h = keras.layers.Cropping2D(
            ((extra_h // 2, extra_h - extra_h // 2), (extra_w // 2, extra_w - extra_w // 2)),
            name=f"{name}_crop",
        )(h)
    outputs = keras.layers.Conv2D(
        channels * params_per_pixel, kernel_size, padding="same", name=f"{name}_output"
    )(h)
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs, name=name)


@keras.saving.register_keras_serializable(package="tfssvae")
class CodeDense(keras.layers.Layer):
    """A dense layer over the concatenation ``[z, c]`` of a vector and a one-hot code.

    ``call([z, c])`` is ``activation([z, c] W + b)`` with one kernel ``W`` of shape
    ``[z_dim + code_size, units]`` (so it initialises and regularises like the plain
    ``Dense`` over the concatenation), computed as ``z W_z + c W_c + b`` with ``W_z, W_c``
    the kernel's two row blocks, so nothing is concatenated.  ``every_code(z)`` gives the
    outputs for all ``code_size`` one-hot codes at once: ``z`` goes through ``W_z`` once
    and code ``e_k`` only adds row ``k`` of ``W_c`` as a bias, instead of ``code_size``
    copies of ``z`` going through the whole kernel.

    Args:
      units: output width.
      code_size: size of the one-hot code ``c``.
      activation: Keras activation applied to the sum.
      kernel_initializer, kernel_regularizer: of ``W`` (Keras specifications).

    Input ``[z [batch, z_dim], c [batch, code_size]]``; output ``[batch, units]``.
    """

    def __init__(self, units, code_size, activation="relu", kernel_initializer="glorot_uniform",
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.units = _positive_int("units", units)
        self.code_size = _positive_int("code_size", code_size)
        self.activation = keras.activations.get(_activation(activation))
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        z_shape, code_shape = input_shape
        if code_shape[-1] != self.code_size:
            raise ValueError(f"{self.name}: expected a code of size {self.code_size}, received shape {code_shape}")
        self.z_dim = int(z_shape[-1])
        self.kernel = self.add_weight(
            name="kernel", shape=(self.z_dim + self.code_size, self.units), initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer)
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def _z_part(self, z):
        """``z W_z + b`` in the compute dtype: ``[batch, units]``; and ``W_c`` ``[code_size, units]``."""
        kernel = keras.ops.cast(self.kernel, self.compute_dtype)
        z = keras.ops.cast(z, self.compute_dtype)
        return (keras.ops.matmul(z, kernel[:self.z_dim]) + keras.ops.cast(self.bias, self.compute_dtype),
                kernel[self.z_dim:])

    def call(self, inputs):
        z, code = inputs
        z_part, code_kernel = self._z_part(z)
        return self.activation(z_part + keras.ops.matmul(keras.ops.cast(code, self.compute_dtype), code_kernel))

    def every_code(self, z):
        """``[batch, code_size, units]``: row ``[i, k]`` is ``call([z_i, e_k])``."""
        if not self.built:
            self.build([tuple(z.shape), (None, self.code_size)])
        z_part, code_kernel = self._z_part(z)
        return self.activation(z_part[:, None, :] + code_kernel[None, :, :])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, code_size=self.code_size,
                      activation=keras.activations.serialize(self.activation),
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
                      kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer))
        return config


def deconv_decoder(
    input_units,
    image_shape,
    params_per_pixel=1,
    filters=(64, 32, 32),
    kernel_size=4,
    strides=2,
    activation="relu",
    conv_initializer="glorot_uniform",
    kernel_regularizer=None,
    name="deconv_decoder",
):
    """Transposed-conv decoder whose last transposed conv gives the pixel parameters.

    ``[batch, input_units]`` goes through ``Dense(s_h * s_w * filters[0], activation)``,
    is reshaped to ``[batch, s_h, s_w, filters[0]]`` with ``s = image size / strides **
    (len(filters) + 1)``, then one ``Conv2DTranspose(f, kernel_size, strides, "same",
    activation)`` per entry of ``filters`` and a linear
    ``Conv2DTranspose(channels * params_per_pixel, kernel_size, strides, "same")`` that
    lands on the image size.  (``conv_decoder`` instead ends with a full-resolution conv
    after its last transposed conv: several times the FLOPs at 64x64.)  The CascadeVAE's
    official decoder is ``CodeDense(256)`` followed by this with ``filters=(64, 32, 32)``.

    Args:
      input_units: width of the input vector.
      image_shape: ``(height, width, channels)``; height and width must be divisible by
        ``strides ** (len(filters) + 1)``.
      params_per_pixel: distribution parameters per pixel and channel (1 for Bernoulli logits).
      filters: filters of the hidden transposed convs (at least one).
      kernel_size, strides: of every transposed conv.
      activation: Keras activation of the hidden layers.
      conv_initializer: Keras initializer of the transposed-conv kernels (the dense
        layer keeps Glorot uniform).
      kernel_regularizer: Keras regularizer of every kernel, or None.
      name: model name.

    Returns:
      A ``keras.Model`` mapping ``[batch, input_units]`` to
      ``[batch, height, width, channels * params_per_pixel]``.
    """
    input_units = _positive_int("input_units", input_units)
    height, width, channels = _image_shape(image_shape)
    params_per_pixel = _positive_int("params_per_pixel", params_per_pixel)
    filters = _positive_ints("filters", filters, allow_empty=False)
    kernel_size = _positive_int("kernel_size", kernel_size)
    strides = _positive_int("strides", strides)
    activation = _activation(activation)
    factor = strides ** (len(filters) + 1)
    if height % factor or width % factor:
        raise ValueError(
            f"image_shape: height and width must be divisible by strides ** (len(filters) + 1) = {factor} "
            f"(strides={strides}, {len(filters)} hidden transposed convs); received {image_shape!r}.")
    start_h, start_w = height // factor, width // factor

    inputs = _input((input_units,), f"{name}_input")
    h = keras.layers.Dense(start_h * start_w * filters[0], activation=activation,
                           kernel_regularizer=kernel_regularizer, name=f"{name}_dense_map")(inputs)
    h = keras.layers.Reshape((start_h, start_w, filters[0]), name=f"{name}_reshape")(h)
    for i, f in enumerate(filters):
        h = keras.layers.Conv2DTranspose(
            f, kernel_size, strides=strides, padding="same", activation=activation,
            kernel_initializer=conv_initializer, kernel_regularizer=kernel_regularizer, name=f"{name}_deconv_{i}",
        )(h)
    outputs = keras.layers.Conv2DTranspose(
        channels * params_per_pixel, kernel_size, strides=strides, padding="same",
        kernel_initializer=conv_initializer, kernel_regularizer=kernel_regularizer, name=f"{name}_output",
    )(h)
    return keras.Model(inputs, outputs, name=name)


# ---------------------------------------------------------------------------
# A decoder's backward pass from a forward pass already made
# ---------------------------------------------------------------------------


def _replay_layers(model):
    """The layers of a ``deconv_decoder`` after its input, checked to be ones ``replay`` knows."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    for layer in layers:
        known = isinstance(layer, (keras.layers.Dense, keras.layers.Conv2DTranspose, keras.layers.Reshape))
        activation = getattr(layer, "activation", keras.activations.linear)
        if not known or activation not in (keras.activations.relu, keras.activations.linear):
            raise ValueError(f"replay: {model.name} has {type(layer).__name__} {layer.name!r} with activation "
                             f"{getattr(activation, '__name__', activation)}; it replays Dense, Conv2DTranspose "
                             f"(ReLU or linear) and Reshape layers only")
    return layers


def layer_outputs(model, inputs):
    """The output of every layer of a ``deconv_decoder`` on ``inputs`` ``[rows, input_units]``: a
    list, the last the model's output; what ``replay`` needs for the backward pass."""
    outputs, h = [], inputs
    for layer in _replay_layers(model):
        h = layer(h)
        outputs.append(h)
    return outputs


def _linear_part(layer, x, kernel, bias):
    """The layer's output before its activation, in its compute dtype."""
    x = keras.ops.cast(x, layer.compute_dtype)
    kernel, bias = keras.ops.cast(kernel, layer.compute_dtype), keras.ops.cast(bias, layer.compute_dtype)
    if isinstance(layer, keras.layers.Dense):
        return keras.ops.matmul(x, kernel) + bias
    return keras.ops.conv_transpose(x, kernel, strides=layer.strides, padding=layer.padding,
                                    output_padding=layer.output_padding, dilation_rate=layer.dilation_rate,
                                    data_format=layer.data_format) + bias


def replay(model, inputs, outputs):
    """``model(inputs)`` with gradient, from the layer outputs of a forward pass already made.

    A ``deconv_decoder``'s output is ``outputs[-1]`` (no layer runs again), and its gradient
    with respect to ``inputs`` and to the model's kernels and biases is the backward pass
    through the stored ``outputs``: a ReLU's mask is where its stored output is positive,
    and each layer's weight and input gradients take only its stored input (the forward
    ops the tape would need are dead code in a ``tf.function`` and pruned).  Used where the
    forward pass at these rows was made anyway without gradient: CascadeVAE's unaries
    include the pass at the chosen code.

    Args:
      model: a ``deconv_decoder`` (Dense, Reshape and ReLU or linear Conv2DTranspose layers).
      inputs: ``[rows, input_units]``, the tensor gradients flow to (its value must be the one
        the stored pass was made from).
      outputs: ``layer_outputs(model, <that value>)``, one tensor per layer.

    Returns:
      ``outputs[-1]`` ``[rows, height, width, channels]``, differentiable as ``model(inputs)``.
    """
    layers = _replay_layers(model)
    if len(outputs) != len(layers):
        raise ValueError(f"replay: expected {len(layers)} layer outputs of {model.name}, received {len(outputs)}")
    weighted = [layer for layer in layers if not isinstance(layer, keras.layers.Reshape)]
    weights = [tf.convert_to_tensor(w.value) for layer in weighted for w in (layer.kernel, layer.bias)]
    outputs = [tf.stop_gradient(o) for o in outputs]

    @tf.custom_gradient
    def forward(x, *weights):
        def backward(grad):
            grads, g = {}, grad
            for i in reversed(range(len(layers))):
                layer, x_in = layers[i], (x if i == 0 else outputs[i - 1])
                if isinstance(layer, keras.layers.Reshape):
                    g = tf.reshape(g, tf.shape(x_in))
                    continue
                if layer.activation is keras.activations.relu:  # TF's own ReLU gradient: g where the output > 0
                    g = tf.raw_ops.ReluGrad(gradients=g, features=outputs[i])
                j = 2 * weighted.index(layer)
                kernel, bias = weights[j], weights[j + 1]
                with tf.GradientTape() as tape:
                    tape.watch([x_in, kernel, bias])
                    y = _linear_part(layer, x_in, kernel, bias)
                g, grads[j], grads[j + 1] = tape.gradient(y, [x_in, kernel, bias], output_gradients=g)
            return [g] + [grads[j] for j in range(len(weights))]

        return tf.identity(outputs[-1]), backward

    return forward(inputs, *weights)
