"""Keras 3 layers that turn network outputs into ``tfp.distributions`` objects.

Every layer here takes a plain tensor of distribution parameters (the output of a
network from :mod:`tfssvae.networks`) and returns a distribution, so models can write
``q_z = self.posterior(encoder(x))`` and then call ``q_z.sample()``,
``q_z.log_prob(z)`` and so on.

Parameter layout
----------------
A layer for an event of shape ``event_shape`` with ``k`` parameters per element takes
an input of shape ``[batch, ...]`` whose non-batch size is ``prod(event_shape) * k``.
The input is reshaped to ``[batch, *event_shape, k]`` and split along the last axis.
So both an MLP output ``[batch, prod(event_shape) * k]`` and a conv output
``[batch, height, width, channels * k]`` work; in either case the ``k`` parameters of
one element are neighbours in memory. ``params_size`` gives the size a network must
output.

These layers return distributions, not tensors, so they are meant to be called on
concrete tensors (eagerly or inside ``tf.function``, for example in a model's
``call``/``train_step``), not on symbolic ``keras.Input`` tensors.
"""

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfssvae import fused

tfd = tfp.distributions

__all__ = [
    "DiagonalNormal",
    "Bernoulli",
    "Categorical",
    "RelaxedOneHotCategorical",
    "LearnedVarianceNormal",
]


def _as_event_shape(event_shape):
    """Returns ``event_shape`` as a tuple of positive ints (an int means ``(int,)``)."""
    if isinstance(event_shape, (int, np.integer)) and not isinstance(event_shape, bool):
        event_shape = (int(event_shape),)
    try:
        shape = tuple(int(d) for d in event_shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"event_shape must be an int or a sequence of positive ints; "
            f"received {event_shape!r}."
        ) from None
    if not shape or any(d <= 0 for d in shape):
        raise ValueError(
            f"event_shape must be non-empty with positive sizes; received {event_shape!r}."
        )
    return shape


def _as_num_classes(num_classes):
    """Checks that ``num_classes`` is an int >= 2 and returns it."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes must be an int >= 2; received {num_classes!r}.")
    if num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2; received {num_classes}.")
    return int(num_classes)


def _positive_float(name, value):
    """Checks that ``value`` is a finite number > 0 and returns it as a float."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number; received {value!r}.") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number; received {value}.")
    return value


def _inverse_softplus(y):
    """Returns ``x`` with ``softplus(x) == y`` for a positive float ``y``."""
    # log(exp(y) - 1), written to stay accurate for large and small y.
    return float(y + np.log(-np.expm1(-y)))


class _DistributionLayer(keras.layers.Layer):
    """A layer whose call returns a tfp distribution, so it has no symbolic output spec.

    Densities are float32 whatever the global Keras policy: under ``mixed_bfloat16`` the
    networks compute in bfloat16 and their outputs are cast up here, so log-probabilities,
    KL terms and losses keep float32 precision.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def compute_output_spec(self, inputs):
        raise TypeError(
            f"{type(self).__name__} returns a tfp distribution and cannot be called on "
            f"symbolic Keras inputs; call it on tensors (e.g. inside a model's call)."
        )


class _EventLayer(_DistributionLayer):
    """Base class: reshapes ``[batch, ...]`` parameters to ``[batch, *event_shape, k]``.

    Subclasses set ``_params_per_element`` (``k``) and implement ``_distribution``.
    """

    _params_per_element = 1

    def __init__(self, event_shape, **kwargs):
        super().__init__(**kwargs)
        self.event_shape = _as_event_shape(event_shape)

    @classmethod
    def params_size(cls, event_shape):
        """Number of parameters per example: ``prod(event_shape) * k``."""
        return int(np.prod(_as_event_shape(event_shape))) * cls._params_per_element

    def _check_input_shape(self, shape):
        """Raises ValueError if the static non-batch size is not ``params_size``."""
        shape = tf.TensorShape(shape)
        expected = self.params_size(self.event_shape)
        if shape.rank is not None and shape.rank < 2:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' expects input [batch, ...] with "
                f"{expected} parameters per example (event_shape={self.event_shape}, "
                f"{self._params_per_element} per element); received shape {shape}."
            )
        if shape.rank is None or not shape[1:].is_fully_defined():
            return
        size = int(np.prod(shape[1:].as_list()))
        if size != expected:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' expects {expected} parameters per "
                f"example (event_shape={self.event_shape}, {self._params_per_element} "
                f"per element); received input of shape {shape} with {size}."
            )

    def _split(self, inputs, dtype=None):
        """Splits ``[batch, ...]`` into ``k`` tensors of shape ``[batch, *event_shape]``, in
        ``dtype`` (the layer's compute dtype if None)."""
        inputs = tf.cast(tf.convert_to_tensor(inputs), dtype or self.compute_dtype)
        self._check_input_shape(inputs.shape)
        k = self._params_per_element
        if k == 1:  # a reshape, no copy (unstack would copy every parameter)
            return [tf.reshape(inputs, tf.concat([tf.shape(inputs)[:1], self.event_shape], axis=0))]
        new_shape = tf.concat(
            [tf.shape(inputs)[:1], tf.constant(self.event_shape + (k,), tf.int32)], axis=0
        )
        params = tf.reshape(inputs, new_shape)
        return tf.unstack(params, num=k, axis=-1)

    def call(self, inputs):
        """Returns the distribution for parameters ``inputs`` of shape ``[batch, ...]``."""
        return self._distribution(*self._split(inputs))

    def _distribution(self, *params):
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config["event_shape"] = list(self.event_shape)
        return config


@keras.saving.register_keras_serializable(package="tfssvae")
class DiagonalNormal(_EventLayer):
    """Normal with diagonal covariance: ``Independent(Normal(loc, scale))``.

    Input: ``[batch, prod(event_shape) * 2]`` or any ``[batch, ...]`` of that size
    (e.g. ``[batch, height, width, channels * 2]``), read as ``(loc, raw_scale)`` pairs.
    ``scale = softplus(raw_scale) + min_scale``.

    Output: a distribution with batch shape ``[batch]`` and event shape ``event_shape``.

    Args:
      event_shape: int or tuple of ints, the shape of one sample.
      min_scale: positive floor added to every scale.
    """

    _params_per_element = 2

    def __init__(self, event_shape, min_scale=1e-4, **kwargs):
        super().__init__(event_shape, **kwargs)
        self.min_scale = _positive_float("min_scale", min_scale)

    def _distribution(self, loc, raw_scale):
        scale = tf.math.softplus(raw_scale) + self.min_scale
        return tfd.Independent(
            tfd.Normal(loc=loc, scale=scale),
            reinterpreted_batch_ndims=len(self.event_shape),
        )

    def get_config(self):
        config = super().get_config()
        config["min_scale"] = self.min_scale
        return config


class _LogitBernoulli(tfd.Bernoulli):
    """``tfd.Bernoulli`` with log_prob ``x * l - softplus(l)``.

    The same value as TFP's ``x log sigmoid(l) + (1 - x) log(1 - sigmoid(l))``, with one
    softplus per pixel instead of two, and its gradient from the same fused pass
    (``fused.bernoulli_log_prob``).
    """

    def _log_prob(self, event):
        logits = self._logits_parameter_no_checks()
        return fused.bernoulli_log_prob(tf.cast(event, logits.dtype), logits)


class _IndependentLogitBernoulli(tfd.Independent):
    """``Independent(_LogitBernoulli)`` whose log_prob sums over the event in the fused kernel.

    The likelihood of every enumerated class row of M2 goes through here, so it is one of
    the largest elementwise costs of a step: ``fused.bernoulli_log_prob_sum`` reads the
    network's logits in their own dtype (bfloat16 under a mixed policy, with no separate
    conversion pass) and gives the per-example sum and its gradient in one pass each.
    ``compute_logits`` are those logits, ``[batch, *event_shape]``; the Bernoulli's own
    are their float32 copy, for everything but log_prob.
    """

    def __init__(self, compute_logits, event_ndims, name="IndependentLogitBernoulli"):
        self._compute_logits = compute_logits
        super().__init__(_LogitBernoulli(logits=tf.cast(compute_logits, tf.float32), dtype=tf.float32),
                         reinterpreted_batch_ndims=event_ndims, name=name)

    def _log_prob(self, x):
        logits = self._compute_logits
        x = tf.convert_to_tensor(x)
        if (x.shape.rank is None or x.shape.rank != logits.shape.rank
                or any(l == 1 and d != 1 for l, d in zip(logits.shape, x.shape))):
            # Extra sample dimensions, or logits to repeat over x's batch: TFP's broadcasting.
            return super()._log_prob(x)
        # x broadcasts to the logits' shape (returned as it is where equal, as M2's rows are).
        x = tf.broadcast_to(tf.cast(x, tf.float32), tf.shape(logits))
        event_size = int(np.prod(self.event_shape.as_list()))
        outer = tf.shape(logits)[:-self._static_reinterpreted_batch_ndims]
        total = fused.bernoulli_log_prob_sum(tf.reshape(x, [-1, event_size]), tf.reshape(logits, [-1, event_size]))
        return tf.reshape(total, outer)


@keras.saving.register_keras_serializable(package="tfssvae")
class Bernoulli(_EventLayer):
    """Independent Bernoulli over ``event_shape`` from logits.

    Input: ``[batch, prod(event_shape)]`` or any ``[batch, ...]`` of that size (e.g.
    ``[batch, height, width, channels]``), read as logits.

    Output: ``Independent(Bernoulli(logits))`` with batch shape ``[batch]``, event shape
    ``event_shape`` and float32 samples. ``log_prob`` also accepts grey levels in
    ``[0, 1]``: it is then ``x * log(sigmoid(l)) + (1 - x) * log(1 - sigmoid(l))``
    summed over the event, i.e. minus the sigmoid cross-entropy, computed in float32.

    Args:
      event_shape: int or tuple of ints, e.g. ``(height, width, channels)``.
    """

    _params_per_element = 1

    def __init__(self, event_shape, **kwargs):
        # The logits reach log_prob in the network's dtype: the fused kernel converts them.
        kwargs.setdefault("autocast", False)
        super().__init__(event_shape, **kwargs)

    def call(self, inputs):
        inputs = tf.convert_to_tensor(inputs)
        (logits,) = self._split(inputs, inputs.dtype if inputs.dtype.is_floating else tf.float32)
        return _IndependentLogitBernoulli(logits, len(self.event_shape))


@keras.saving.register_keras_serializable(package="tfssvae")
class LearnedVarianceNormal(_EventLayer):
    """Gaussian observation model with a mean from the network and a learned scale.

    Input: ``[batch, prod(event_shape)]`` or any ``[batch, ...]`` of that size, used as
    the mean. The layer owns a trainable weight ``raw_scale`` of shape ``event_shape``;
    ``scale = softplus(raw_scale) + min_scale``, shared by every example and starting
    at ``initial_scale``.

    Output: ``Independent(Normal(mean, scale))`` with batch shape ``[batch]`` and event
    shape ``event_shape``.

    Args:
      event_shape: int or tuple of ints.
      min_scale: positive floor added to the scale.
      initial_scale: scale at initialisation; must be greater than ``min_scale``.
    """

    _params_per_element = 1

    def __init__(self, event_shape, min_scale=1e-3, initial_scale=1.0, **kwargs):
        super().__init__(event_shape, **kwargs)
        self.min_scale = _positive_float("min_scale", min_scale)
        self.initial_scale = _positive_float("initial_scale", initial_scale)
        if self.initial_scale <= self.min_scale:
            raise ValueError(
                f"initial_scale must be greater than min_scale={self.min_scale}; "
                f"received {self.initial_scale}."
            )

    def build(self, input_shape):
        self._check_input_shape(input_shape)
        self.raw_scale = self.add_weight(
            name="raw_scale",
            shape=self.event_shape,
            initializer=keras.initializers.Constant(
                _inverse_softplus(self.initial_scale - self.min_scale)
            ),
            trainable=True,
        )

    @property
    def scale(self):
        """The current scale, a tensor of shape ``event_shape``."""
        return tf.math.softplus(tf.convert_to_tensor(self.raw_scale)) + self.min_scale

    def _distribution(self, mean):
        scale = tf.cast(self.scale, mean.dtype)
        return tfd.Independent(
            tfd.Normal(loc=mean, scale=tf.broadcast_to(scale, tf.shape(mean))),
            reinterpreted_batch_ndims=len(self.event_shape),
        )

    def get_config(self):
        config = super().get_config()
        config["min_scale"] = self.min_scale
        config["initial_scale"] = self.initial_scale
        return config


class _ClassLayer(_DistributionLayer):
    """Base class for layers over ``num_classes`` classes from ``[batch, num_classes]``."""

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = _as_num_classes(num_classes)

    @staticmethod
    def params_size(num_classes):
        """Number of parameters per example: ``num_classes`` logits."""
        return _as_num_classes(num_classes)

    def _logits(self, inputs):
        """Checks and returns logits of shape ``[batch, num_classes]``."""
        logits = tf.cast(tf.convert_to_tensor(inputs), self.compute_dtype)
        shape = logits.shape
        if shape.rank is not None and (
            shape.rank != 2 or (shape[-1] is not None and shape[-1] != self.num_classes)
        ):
            raise ValueError(
                f"{type(self).__name__} '{self.name}' expects logits of shape "
                f"[batch, {self.num_classes}]; received shape {shape}."
            )
        return logits

    def get_config(self):
        config = super().get_config()
        config["num_classes"] = self.num_classes
        return config


@keras.saving.register_keras_serializable(package="tfssvae")
class Categorical(_ClassLayer):
    """Categorical over ``num_classes`` classes from logits ``[batch, num_classes]``.

    Output: ``Categorical(logits)`` with int32 samples of shape ``[batch]``, or, with
    ``one_hot=True``, ``OneHotCategorical(logits)`` with float32 samples of shape
    ``[batch, num_classes]``.

    Args:
      num_classes: number of classes (>= 2).
      one_hot: whether samples and ``log_prob`` arguments are one-hot vectors.
    """

    def __init__(self, num_classes, one_hot=False, **kwargs):
        super().__init__(num_classes, **kwargs)
        self.one_hot = bool(one_hot)

    def call(self, inputs):
        """Returns the distribution for logits ``inputs`` of shape ``[batch, num_classes]``."""
        logits = self._logits(inputs)
        if self.one_hot:
            return tfd.OneHotCategorical(logits=logits, dtype=tf.float32)
        return tfd.Categorical(logits=logits, dtype=tf.int32)

    def get_config(self):
        config = super().get_config()
        config["one_hot"] = self.one_hot
        return config


@keras.saving.register_keras_serializable(package="tfssvae")
class RelaxedOneHotCategorical(_ClassLayer):
    """Concrete / Gumbel-softmax relaxation of a one-hot categorical.

    Input: logits ``[batch, num_classes]``. Output:
    ``RelaxedOneHotCategorical(temperature, logits)``, whose reparameterised samples
    are points of the simplex of shape ``[batch, num_classes]``.

    Args:
      num_classes: number of classes (>= 2).
      temperature: positive relaxation temperature; lower is closer to one-hot.
    """

    def __init__(self, num_classes, temperature=0.5, **kwargs):
        super().__init__(num_classes, **kwargs)
        self.temperature = _positive_float("temperature", temperature)

    def call(self, inputs):
        """Returns the distribution for logits ``inputs`` of shape ``[batch, num_classes]``."""
        logits = self._logits(inputs)
        temperature = tf.constant(self.temperature, dtype=logits.dtype)
        return tfd.RelaxedOneHotCategorical(temperature, logits=logits)

    def get_config(self):
        config = super().get_config()
        config["temperature"] = self.temperature
        return config
