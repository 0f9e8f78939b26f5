"""M2 (Kingma, Rezende, Mohamed, Welling 2014): the class is a latent variable, observed for a few examples.

Generative model p(y) p(z) p(x | y, z) with p(y) uniform and p(z) = N(0, I); recognition
model q(y | x) q(z | x, y).  Every example's bound is computed for all classes at once
(the batch is repeated num_classes times and goes through the networks in one pass),
then weighted by the observed one-hot label or by q(y | x), so the labelled bound
L(x, y) and the unlabelled bound U(x) come from the same tensors.
"""
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

    Batches are dicts ``{"x": [batch, *input_shape], "y": int [batch], "y_mask": bool [batch]}``.
    """

    loss_names = ("loss", "reconstruction", "kl_z", "kl_y", "classification")

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
        **kwargs,
    ):
        super().__init__(input_shape, num_classes, **kwargs)
        if int(latent_dim) < 1:
            raise ValueError(f"latent_dim: expected a positive integer, received {latent_dim}")
        if alpha < 0:
            raise ValueError(f"alpha: expected a non-negative weight, received {alpha}")
        self.latent_dim = int(latent_dim)
        self.hidden_units = tuple(int(h) for h in hidden_units)
        self.activation = activation
        self.likelihood_name = likelihood
        self.network = network
        self.alpha = float(alpha)
        self.num_examples = num_examples
        self.num_labelled = num_labelled
        self.classification_weight = self.alpha
        if num_examples and num_labelled:
            self.classification_weight = self.alpha * num_examples / num_labelled

        K, d = self.num_classes, self.latent_dim
        self.likelihood = observation_layer(likelihood, self.data_shape)
        z_params = distributions.DiagonalNormal.params_size(d)
        if network == "mlp":
            mlp = dict(hidden_units=self.hidden_units, activation=activation)
            self.classifier = networks.mlp([self.data_shape], K, name="classifier", **mlp)
            self.encoder = networks.mlp([self.data_shape, (K,)], z_params, name="encoder", **mlp)
            self.decoder_network = networks.mlp(
                [(K,), (d,)], type(self.likelihood).params_size(self.data_shape), name="decoder", **mlp)
        elif network == "conv":
            self.classifier = networks.conv_encoder(self.data_shape, K, name="classifier")
            self.encoder = networks.conv_encoder(self.data_shape, z_params, extra_input_shapes=[(K,)], name="encoder")
            self.decoder_network = networks.conv_decoder(
                [(K,), (d,)], self.data_shape, params_per_pixel=type(self.likelihood).params_size(1), name="decoder")
        else:
            raise ValueError(f"network: expected one of {NETWORKS}, received {network!r}")
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
        }

    # --- the pieces of the model ---------------------------------------------------

    def q_z(self, x, y_one_hot, training=False):
        """q(z | x, y): ``x`` [batch, *input_shape], ``y_one_hot`` [batch, K] -> Normal over [batch, latent_dim]."""
        return self.posterior_z(self.encoder([x, y_one_hot], training=training))

    def p_x(self, y_one_hot, z, training=False):
        """p(x | y, z): ``y_one_hot`` [batch, K], ``z`` [batch, latent_dim] -> distribution over [batch, *input_shape]."""
        return self.likelihood(self.decoder_network([y_one_hot, z], training=training))

    def class_bounds(self, x, noise=None, training=False):
        """The labelled bound's pieces for every class at once.

        Args:
          x: ``[batch, *input_shape]``.
          noise: optional standard-normal ``[batch, K, latent_dim]`` used as the
            reparameterisation noise (so a test can repeat the same draw); sampled if None.

        Returns:
          dict of ``[batch, K]`` tensors: ``log_likelihood`` log p(x | y=k, z_k) and
          ``kl_z`` KL(q(z | x, y=k) || p(z)), with z_k ~ q(z | x, y=k).
        """
        K = self.num_classes
        # Example-major repetition: row b * K + k holds example b with class k.
        x_all = tf.repeat(x, K, axis=0)
        y_all = tf.tile(tf.eye(K, dtype=x.dtype), [tf.shape(x)[0], 1])
        q = self.q_z(x_all, y_all, training=training)
        if noise is None:
            z = q.sample()
        else:
            z = q.mean() + q.stddev() * tf.reshape(noise, [-1, self.latent_dim])
        log_likelihood = self.p_x(y_all, z, training=training).log_prob(x_all)
        kl_z = tfd.kl_divergence(q, self.prior_z)
        return {
            "log_likelihood": tf.reshape(log_likelihood, [-1, K]),
            "kl_z": tf.reshape(kl_z, [-1, K]),
        }

    def compute_losses(self, batch, training=False, noise=None):
        """Loss terms for a batch dict; ``noise`` as in ``class_bounds`` (sampled if None)."""
        x, y, y_mask = batch["x"], batch["y"], batch["y_mask"]
        x = as_input(x, self.data_shape, "x")
        logits = self.classifier(x, training=training)
        terms = self.class_bounds(x, noise=noise, training=training)
        log_prior_y = objectives.uniform_log_prior(self.num_classes)
        bounds = objectives.elbo(terms["log_likelihood"] + log_prior_y, [terms["kl_z"]])
        # One-hot where y is observed (the labelled bound L(x, y)); q(y | x) elsewhere (U(x)).
        weights = objectives.class_weights(logits, y, y_mask)
        bound = objectives.marginalise_classes(bounds, weights)
        cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(y, tf.int32) * tf.cast(y_mask, tf.int32), logits=logits
        )
        classification = objectives.masked_mean(cross_entropy, y_mask)
        # KL(weights || uniform p(y)); together with the two terms below it adds up to -bound.
        kl_y = tf.reduce_sum(tf.math.xlogy(weights, weights), axis=-1) - log_prior_y
        losses = {
            "loss": -tf.reduce_mean(bound) + self.classification_weight * classification,
            "reconstruction": tf.reduce_mean(tf.reduce_sum(-weights * terms["log_likelihood"], axis=-1)),
            "kl_z": tf.reduce_mean(tf.reduce_sum(weights * terms["kl_z"], axis=-1)),
            "kl_y": tf.reduce_mean(kl_y),
            "classification": classification,
        }
        return losses, tf.nn.softmax(logits)

    # --- serving -----------------------------------------------------------------------

    def classify(self, images):
        """``images`` [batch, *input_shape] -> ``probabilities`` [batch, K] and ``class`` int64 [batch]."""
        images = as_input(images, self.data_shape)
        probabilities = tf.nn.softmax(self.classifier(images))
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
