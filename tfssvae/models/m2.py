"""M2 (Kingma, Rezende, Mohamed, Welling 2014): the class is a latent variable, observed for a few examples.

Generative model p(y) p(z) p(x | y, z) with p(y) uniform and p(z) = N(0, I); recognition
model q(y | x) q(z | x, y).  A training step builds one set of rows: every unlabelled
example once per class (so U(x) sums the class out exactly) and every labelled example
once, for its own class (L(x, y) needs no other).  All rows go through q(z | x, y) and
p(x | y, z) in one pass.  The encoder's first layer is split as W_x x + W_y y: W_x x is
computed once per example and shared by its K rows, so the image is projected once, not K
times (the same function as a dense layer over [x, one_hot(y)]).
"""
import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfssvae import distributions, networks, objectives
from tfssvae.models.base import (
    GenerativeModel,
    as_input,
    observation_layer,
    one_hot_classes,
    standard_normal,
)

tfd = tfp.distributions

NETWORKS = ("mlp", "conv")


class M2(GenerativeModel):
    """The M2 semi-supervised VAE.

    Args:
      input_shape: shape of one example without the batch, e.g. ``(28, 28, 1)`` for
        images or ``(50,)`` for the M1 features of M1+M2.
      num_classes: number of classes K.
      latent_dim: size of the continuous latent z.
      hidden_units: widths of the hidden layers of every MLP.
      activation: hidden activation.
      likelihood: ``"bernoulli"`` (pixels in [0, 1]) or ``"gaussian"`` (learned variance).
      alpha: weight of the labelled classification term log q(y | x).
      num_examples, num_labelled: when both are given the classification term is
        weighted ``alpha * num_examples / num_labelled`` (Kingma et al.); else ``alpha``.
      network: ``"mlp"`` (every network an MLP) or ``"conv"`` (conv encoders and decoder, for images).
      kl_z_weight: weight of KL(q(z | x, y) || p(z)) in every row's bound; 1 is the ELBO,
        above 1 (a beta-VAE's beta) makes z costlier, so the decoder takes the class from y.

    Batches are dicts ``{"x": [batch, *input_shape], "y": int [batch], "y_mask": bool [batch]}``.
    """

    loss_names = ("loss", "reconstruction", "kl_z", "kl_y", "classification")
    xla_incompatibility = ("M2's step computes a number of rows that depends on the batch's label mask "
                           "(every class for an unlabelled example, one for a labelled one), which XLA cannot compile")

    def __init__(
        self,
        input_shape,
        num_classes,
        latent_dim=50,
        hidden_units=(500,),
        activation="softplus",
        likelihood="bernoulli",
        alpha=0.1,
        num_examples=None,
        num_labelled=None,
        network="mlp",
        kl_z_weight=1.0,
        **kwargs,
    ):
        super().__init__(input_shape, num_classes, **kwargs)
        if int(latent_dim) < 1:
            raise ValueError(f"latent_dim: expected a positive integer, received {latent_dim}")
        if alpha < 0:
            raise ValueError(f"alpha: expected a non-negative weight, received {alpha}")
        if not kl_z_weight > 0:
            raise ValueError(f"kl_z_weight: expected a positive weight, received {kl_z_weight}")
        self.latent_dim = int(latent_dim)
        self.hidden_units = tuple(int(h) for h in hidden_units)
        self.activation = activation
        self.likelihood_name = likelihood
        self.network = network
        self.kl_z_weight = float(kl_z_weight)
        self.alpha = float(alpha)
        self.num_examples = num_examples
        self.num_labelled = num_labelled
        self.classification_weight = self.alpha
        if num_examples and num_labelled:
            self.classification_weight = self.alpha * num_examples / num_labelled

        K, d = self.num_classes, self.latent_dim
        self.likelihood = observation_layer(likelihood, self.data_shape)
        z_params = distributions.DiagonalNormal.params_size(d)
        # q(z | x, y) = head(activation(trunk(x) + class_embedding(y))): trunk ends in the
        # linear map of x that a dense layer over [x, y] would apply, so it is shared by
        # the K class rows of an example.
        if network == "mlp":
            mlp = dict(hidden_units=self.hidden_units, activation=activation)
            self.classifier = networks.mlp([self.data_shape], K, name="classifier", **mlp)
            mixing_units = self.hidden_units[0] if self.hidden_units else z_params
            mixing_activation = activation if self.hidden_units else None
            self.encoder_trunk = networks.mlp([self.data_shape], mixing_units, hidden_units=(),
                                              name="encoder_trunk")
            self.encoder_head = networks.mlp([(mixing_units,)], z_params, hidden_units=self.hidden_units[1:],
                                             activation=activation, name="encoder_head") \
                if self.hidden_units else None
            self.decoder_network = networks.mlp(
                [(K,), (d,)], type(self.likelihood).params_size(self.data_shape), name="decoder", **mlp)
        elif network == "conv":
            mixing_units, mixing_activation = 256, "relu"  # conv_encoder's dense layer
            self.classifier = networks.conv_encoder(self.data_shape, K, name="classifier")
            self.encoder_trunk = networks.conv_encoder(self.data_shape, mixing_units, dense_units=0,
                                                       name="encoder_trunk")
            self.encoder_head = networks.mlp([(mixing_units,)], z_params, hidden_units=(), name="encoder_head")
            self.decoder_network = networks.conv_decoder(
                [(K,), (d,)], self.data_shape, params_per_pixel=type(self.likelihood).params_size(1), name="decoder")
        else:
            raise ValueError(f"network: expected one of {NETWORKS}, received {network!r}")
        self.class_embedding = keras.layers.Dense(mixing_units, use_bias=False, name="encoder_class_embedding")
        self.class_embedding.build((None, K))
        self.mixing_activation = networks.activation_layer(mixing_activation, name="encoder_mixing_activation") \
            if mixing_activation else None
        self.posterior_z = distributions.DiagonalNormal(d, name="q_z")
        self.prior_z = standard_normal(d)

    def get_config(self):
        return {
            "input_shape": self.data_shape,
            "num_classes": self.num_classes,
            "latent_dim": self.latent_dim,
            "hidden_units": self.hidden_units,
            "activation": self.activation,
            "likelihood": self.likelihood_name,
            "alpha": self.alpha,
            "num_examples": self.num_examples,
            "num_labelled": self.num_labelled,
            "network": self.network,
            "kl_z_weight": self.kl_z_weight,
        }

    # --- the pieces of the model ---------------------------------------------------

    def q_z(self, x, y_one_hot, training=False):
        """q(z | x, y): ``x`` [batch, *input_shape], ``y_one_hot`` [batch, K] -> Normal over [batch, latent_dim]."""
        return self._q_z_from_projection(self.encoder_trunk(x, training=training), y_one_hot, training)

    def _q_z_from_projection(self, projected_x, y_one_hot, training=False):
        """q(z | x, y) from ``projected_x`` = trunk(x) [rows, units] and ``y_one_hot`` [rows, K]."""
        h = projected_x + self.class_embedding(y_one_hot)
        h = tf.cast(h, tf.float32) if self.mixing_activation is None else self.mixing_activation(h, training=training)
        if self.encoder_head is not None:
            h = self.encoder_head(h, training=training)
        return self.posterior_z(h)

    def p_x(self, y_one_hot, z, training=False):
        """p(x | y, z): ``y_one_hot`` [batch, K], ``z`` [batch, latent_dim] -> distribution over [batch, *input_shape]."""
        return self.likelihood(self.decoder_network([y_one_hot, z], training=training))

    def row_bounds(self, x, rows, noise=None, training=False):
        """log p(x | y, z) + log p(y) - KL(q(z | x, y) || p(z)) for each (example, class) row.

        Args:
          x: ``[batch, *input_shape]``.
          rows: ``objectives.ClassRows`` naming the example and class of every row.
          noise: optional standard-normal ``[batch, K, latent_dim]`` reparameterisation
            noise (row (b, k) uses ``noise[b, k]``) so a test can repeat a draw; sampled if None.

        Returns:
          dict of ``[rows]`` tensors: ``bound``, ``log_likelihood`` and ``kl_z``.
        """
        projected = tf.gather(self.encoder_trunk(x, training=training), rows.example)
        y_rows = tf.one_hot(rows.label, self.num_classes, dtype=projected.dtype)
        q = self._q_z_from_projection(projected, y_rows, training)
        if noise is None:
            z = q.sample()
        else:
            z = q.mean() + q.stddev() * tf.gather_nd(noise, tf.stack([rows.example, rows.label], axis=-1))
        log_likelihood = self.p_x(y_rows, z, training=training).log_prob(tf.gather(x, rows.example))
        kl_z = tfd.kl_divergence(q, self.prior_z)
        bound = objectives.elbo(log_likelihood + objectives.uniform_log_prior(self.num_classes),
                                [self.kl_z_weight * kl_z])
        return {"bound": bound, "log_likelihood": log_likelihood, "kl_z": kl_z}

    def class_bounds(self, x, noise=None, training=False):
        """The labelled bound's pieces for every example and every class (the naive enumeration).

        Args:
          x: ``[batch, *input_shape]``.
          noise: as in ``row_bounds``.

        Returns:
          dict of ``[batch, K]`` tensors: ``bound``, ``log_likelihood`` log p(x | y=k, z_k) and
          ``kl_z`` KL(q(z | x, y=k) || p(z)), with z_k ~ q(z | x, y=k).
        """
        batch = tf.shape(x)[0]
        rows = objectives.class_rows(tf.zeros([batch], tf.int32), tf.zeros([batch], tf.bool), self.num_classes)
        return {name: tf.reshape(value, [-1, self.num_classes])
                for name, value in self.row_bounds(x, rows, noise, training).items()}

    def compute_losses(self, batch, training=False, noise=None):
        """Loss terms for a batch dict; ``noise`` as in ``row_bounds`` (sampled if None)."""
        x, y, y_mask = batch["x"], batch["y"], batch["y_mask"]
        x = as_input(x, self.data_shape, "x")
        logits = tf.cast(self.classifier(x, training=training), tf.float32)
        rows = objectives.class_rows(y, y_mask, self.num_classes)
        terms = self.row_bounds(x, rows, noise=noise, training=training)
        # L(x, y) where y is observed; U(x) = E_q(y|x)[L(x, y)] + H(q(y | x)) elsewhere.
        bound = objectives.enumerated_bound(terms["bound"], logits, rows)
        cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(y, tf.int32) * tf.cast(y_mask, tf.int32), logits=logits
        )
        classification = objectives.masked_mean(cross_entropy, y_mask)
        reconstruction = objectives.enumerated_bound(-terms["log_likelihood"], logits, rows, entropy=False)
        kl_z = objectives.enumerated_bound(terms["kl_z"], logits, rows, entropy=False)
        # Per example: -bound, plus the weighted cross-entropy where the label is observed
        # (Kingma et al.'s alpha * N / N_labelled per labelled example), averaged over the batch.
        labelled = tf.cast(y_mask, cross_entropy.dtype)
        losses = {
            "loss": tf.reduce_mean(-bound + self.classification_weight * labelled * cross_entropy),
            "reconstruction": tf.reduce_mean(reconstruction),
            "kl_z": tf.reduce_mean(kl_z),
            # KL(weights || uniform p(y)): the rest of -bound.
            "kl_y": (-tf.reduce_mean(bound) - tf.reduce_mean(reconstruction)
                     - self.kl_z_weight * tf.reduce_mean(kl_z)),
            "classification": classification,
        }
        return losses, tf.nn.softmax(logits)

    # --- serving -----------------------------------------------------------------------

    def classify(self, images):
        """``images`` [batch, *input_shape] -> ``probabilities`` [batch, K] and ``class`` int64 [batch]."""
        images = as_input(images, self.data_shape)
        probabilities = tf.nn.softmax(tf.cast(self.classifier(images), tf.float32))
        return {"probabilities": probabilities, "class": tf.argmax(probabilities, axis=-1)}

    def encode(self, images):
        """q(z | x, y) at the predicted class: ``mean``/``scale`` [batch, latent_dim], ``class`` [batch]."""
        images = as_input(images, self.data_shape)
        predicted = self.classify(images)["class"]
        q = self.q_z(images, tf.one_hot(predicted, self.num_classes))
        return {"mean": q.mean(), "scale": q.stddev(), "class": predicted}

    def reconstruct(self, images):
        """Mean of p(x | y, z) at the predicted class and the posterior mean of z: [batch, *input_shape]."""
        code = self.encode(images)
        return {
            "reconstruction": self.p_x(tf.one_hot(code["class"], self.num_classes), code["mean"]).mean()
        }

    def generate(self, labels, latent):
        """``labels`` int [batch] and ``latent`` [batch, latent_dim] -> ``images``, the mean of p(x | y, z)."""
        latent = as_input(latent, (self.latent_dim,), "latent")
        return {"images": self.p_x(one_hot_classes(labels, self.num_classes), latent).mean()}

    def generate_signature(self):
        return [
            tf.TensorSpec((None,), tf.int32, name="labels"),
            tf.TensorSpec((None, self.latent_dim), tf.float32, name="latent"),
        ]
