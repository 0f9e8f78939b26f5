"""What every tfssvae model shares: the Keras train/test steps and the serving interface.

A model subclass implements ``compute_losses(batch, training)`` returning a dict of
scalar terms with a ``"loss"`` entry (the quantity minimised) together with the class
probabilities it computed on the way (reused for the error metric; None for models
without a class), and the serving methods.  ``train_step``/``test_step`` are the ones
``model.fit`` uses and the ones ``tfssvae.training.train`` wraps in ``tf.function``.
"""
import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfssvae import distributions

tfd = tfp.distributions


def as_input(x, expected_shape, name="images"):
    """``x`` as a float32 tensor, checked to be ``[batch, *expected_shape]`` (and finite, when
    called eagerly); ValueError otherwise.

    The shape check reads the static shape, known while a ``tf.function`` is traced, so it
    costs nothing per step and fires before TensorFlow reports a matmul mismatch.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    shape = tuple(x.shape)
    expected = tuple(expected_shape)
    described = f"[batch, {', '.join(map(str, expected))}]"
    if len(shape) != len(expected) + 1:
        raise ValueError(f"{name}: expected rank {len(expected) + 1} {described}, received shape {shape}")
    if any(got is not None and got != want for got, want in zip(shape[1:], expected)):
        raise ValueError(f"{name}: expected shape {described}, received {shape}")
    if tf.executing_eagerly() and not bool(tf.reduce_all(tf.math.is_finite(x))):
        # Eager calls only (a traced step would pay for it every step; serving graphs check it).
        bad = int(tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(x)), tf.int32)))
        raise ValueError(f"{name}: expected finite values, received {bad} NaN or infinite values")
    return x


class GenerativeModel(keras.Model):
    """Base class: named loss terms, Keras steps, and the methods exported for serving.

    Subclasses set ``loss_names`` (the terms ``compute_losses`` returns) and implement
    ``compute_losses``, ``encode``, ``reconstruct`` and ``generate`` with
    ``generate_signature``, plus ``classify`` when ``has_classifier``.
    """

    loss_names = ("loss",)
    has_classifier = True  # False for models without a class (ML-VAE): no error metric, no classify
    nullable_arguments = ()  # constructor arguments whose None is a setting (configs may set them to None)
    # Why the training step cannot be XLA-compiled, or None when it can.
    xla_incompatibility = None

    def __init__(self, input_shape, num_classes, **kwargs):
        # The model itself stays float32 (its inputs are not cast): under mixed_bfloat16 its
        # networks compute in bfloat16 and its distribution layers in float32.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.data_shape = tuple(int(d) for d in input_shape)
        if not self.data_shape or min(self.data_shape) < 1:
            raise ValueError(f"input_shape: expected positive dimensions, received {input_shape}")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes: expected at least 2, received {num_classes}")
        self.num_classes = int(num_classes)
        self._trackers = {name: keras.metrics.Mean(name=name) for name in self.loss_names}
        if self.has_classifier:
            self._trackers["error"] = keras.metrics.Mean(name="error")

    @property
    def metrics(self):
        return list(self._trackers.values())

    # --- steps -----------------------------------------------------------------------

    def compute_losses(self, batch, training=False):
        """Returns ``(losses, class_probabilities)``: a dict of scalars with ``"loss"``, and
        ``[batch, num_classes]`` (None for a model without a classifier)."""
        raise NotImplementedError

    def _update_trackers(self, losses, probabilities, batch):
        for name in self.loss_names:
            self._trackers[name].update_state(losses[name])
        if probabilities is None:
            return {name: tracker.result() for name, tracker in self._trackers.items()}
        # Classification error on the examples whose label is observed.
        predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        wrong = tf.cast(tf.not_equal(predicted, tf.cast(batch["y"], tf.int32)), tf.float32)
        self._trackers["error"].update_state(wrong, sample_weight=tf.cast(batch["y_mask"], tf.float32))
        return {name: tracker.result() for name, tracker in self._trackers.items()}

    def compute_gradients(self, data):
        """The loss terms of a batch and the gradients of its loss: ``(gradients, losses,
        probabilities)``, gradients in the order of ``trainable_variables``.

        Under a ``tf.distribute`` strategy with several replicas (a replica's share of the
        global batch) the loss is divided by their number, so that the optimizer's sum of the
        replicas' gradients is the gradient of the global batch's mean loss; the loss terms
        returned stay unscaled.
        """
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            losses, probabilities = self.compute_losses(data, training=True)
            loss = losses["loss"] / replicas if replicas > 1 else losses["loss"]
        return tape.gradient(loss, self.trainable_variables), losses, probabilities

    def train_step(self, data):
        gradients, losses, probabilities = self.compute_gradients(data)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self._update_trackers(losses, probabilities, data)

    def test_step(self, data):
        losses, probabilities = self.compute_losses(data, training=False)
        return self._update_trackers(losses, probabilities, data)

    def build(self, input_shape=None):
        # Every network is created, with its input shapes, in __init__.
        self.built = True

    def call(self, inputs, training=False):
        """Class probabilities ``[batch, num_classes]`` for ``inputs`` ``[batch, *input_shape]``
        (the posterior mean of the code for a model without a classifier)."""
        if not self.has_classifier:
            return self.encode(inputs)["mean"]
        return self.classify(inputs)["probabilities"]

    def build_variables(self):
        """Create every variable (networks, likelihood scales, optimizer slots) by one eager pass.

        Needed before a checkpoint is restored into the model, so restoring is exact.
        """
        batch = {
            "x": tf.zeros((2, *self.data_shape)),
            "y": tf.zeros((2,), tf.int32),
            "y_mask": tf.constant([True, False]),
            "group": tf.constant([0, 0]),
        }
        self.compute_losses(batch)
        self(batch["x"])
        if getattr(self, "optimizer", None) is not None:
            self.optimizer.build(self.trainable_variables)

    # --- serving interface (all return dicts of named tensors) ------------------------

    def classify(self, images):
        raise NotImplementedError

    def encode(self, images):
        raise NotImplementedError

    def reconstruct(self, images):
        raise NotImplementedError

    def generate(self, *args):
        raise NotImplementedError

    def generate_signature(self):
        """TensorSpecs of ``generate``'s arguments, in order, named as its arguments."""
        raise NotImplementedError

    def input_signature(self):
        return tf.TensorSpec((None, *self.data_shape), tf.float32, name="images")

    def serving_bounds(self):
        """Allowed values of serving inputs by input name, checked in the exported graph:
        ``(low, high)``, inclusive for float inputs, ``[low, high)`` for integer ones (None: open).

        Images are in [0, 1]; class labels in [0, num_classes); a discrete code ``d`` in
        [0, discrete_size); group ids non-negative.
        """
        bounds = {"images": (0.0, 1.0), "labels": (0, self.num_classes), "group_ids": (0, None)}
        if getattr(self, "discrete_size", None):
            bounds["d"] = (0, int(self.discrete_size))
        return bounds

    def serving_functions(self):
        """``{signature name: (function, input TensorSpecs)}`` for export; ``serving_default`` is one of them.

        Input names in the SavedModel are the functions' argument names.
        """
        images = [self.input_signature()]
        functions = {
            "encode": (self.encode, images),
            "reconstruct": (self.reconstruct, images),
            "generate": (self.generate, self.generate_signature()),
        }
        if self.has_classifier:
            functions["classify"] = (self.classify, images)
            functions["serving_default"] = functions["classify"]
        else:
            functions["serving_default"] = functions["encode"]
        return functions


def one_hot_classes(labels, num_classes):
    """int ``[batch]`` -> float ``[batch, num_classes]``; ValueError for labels outside the range when eager."""
    if tf.executing_eagerly():
        values = np.asarray(labels)
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"labels: expected values in [0, {num_classes}), received min {values.min()} max {values.max()}"
            )
    return tf.one_hot(tf.cast(labels, tf.int32), num_classes)


LIKELIHOODS = ("bernoulli", "gaussian")


def observation_layer(likelihood, event_shape):
    """The decoder's output distribution p(x | ...): Bernoulli pixels or a learned-variance Gaussian."""
    if likelihood == "bernoulli":
        return distributions.Bernoulli(event_shape, name="likelihood")
    if likelihood == "gaussian":
        return distributions.LearnedVarianceNormal(event_shape, name="likelihood")
    raise ValueError(f"likelihood: expected one of {LIKELIHOODS}, received {likelihood!r}")


def standard_normal(latent_dim):
    """The prior p(z) = N(0, I) over ``[latent_dim]``."""
    return tfd.Independent(
        tfd.Normal(tf.zeros([latent_dim]), tf.ones([latent_dim])), reinterpreted_batch_ndims=1
    )
