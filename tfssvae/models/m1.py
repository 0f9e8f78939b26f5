"""M1 and M1+M2 (Kingma, Rezende, Mohamed, Welling 2014).

M1 is a VAE p(z) p(x | z), q(z | x); a softmax classifier reads the posterior means
and learns from the labelled examples only (its gradient is stopped at the latent
means, so labels never shape the representation, as in the paper).

M1+M2 trains an M2 whose "data" are samples z1 ~ q(z1 | x) of a pre-trained, frozen
M1, with a Gaussian likelihood p(z1 | y, z2).
"""
import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfssvae import distributions, networks, objectives
from tfssvae.models.base import GenerativeModel, as_input, observation_layer, standard_normal
from tfssvae.models.m2 import M2

tfd = tfp.distributions


class M1(GenerativeModel):
    """The M1 VAE with a latent-feature classifier.

    Args:
      input_shape: shape of one image, e.g. ``(28, 28, 1)``.
      num_classes: number of classes for the classifier head.
      latent_dim: size of z.
      hidden_units, activation: the MLP encoder and decoder.
      likelihood: ``"bernoulli"`` or ``"gaussian"``.
      kl_z_weight: weight of KL(q(z | x) || p(z)); 1 is the ELBO (Kingma et al.).  Below 1
        (a beta-VAE's beta) the code keeps more of the image: more active dimensions
        (RESULTS.md, issue 8, Fashion-MNIST after 10 epochs: 5 of 50 at 1, 12 at 0.2, 23 at 0.05).

    Batches are dicts ``{"x": [batch, *input_shape], "y": int [batch], "y_mask": bool [batch]}``;
    the VAE uses every example, the classifier head only those with ``y_mask`` True.
    """

    loss_names = ("loss", "reconstruction", "kl_z", "classification")

    def __init__(
        self,
        input_shape,
        num_classes,
        latent_dim=50,
        hidden_units=(500,),
        activation="softplus",
        likelihood="bernoulli",
        kl_z_weight=1.0,
        **kwargs,
    ):
        super().__init__(input_shape, num_classes, **kwargs)
        if int(latent_dim) < 1:
            raise ValueError(f"latent_dim: expected a positive integer, received {latent_dim}")
        if not kl_z_weight > 0:
            raise ValueError(f"kl_z_weight: expected a positive weight, received {kl_z_weight}")
        self.kl_z_weight = float(kl_z_weight)
        self.latent_dim = int(latent_dim)
        self.hidden_units = tuple(int(h) for h in hidden_units)
        self.activation = activation
        self.likelihood_name = likelihood
        self.encoder = networks.mlp(
            [self.data_shape],
            distributions.DiagonalNormal.params_size(self.latent_dim),
            hidden_units=self.hidden_units,
            activation=activation,
            name="encoder",
        )
        self.likelihood = observation_layer(likelihood, self.data_shape)
        self.decoder_network = networks.mlp(
            [(self.latent_dim,)],
            type(self.likelihood).params_size(self.data_shape),
            hidden_units=self.hidden_units,
            activation=activation,
            name="decoder",
        )
        self.posterior_z = distributions.DiagonalNormal(self.latent_dim, name="q_z")
        self.classifier_head = keras.layers.Dense(num_classes, name="classifier_head")
        self.prior_z = standard_normal(self.latent_dim)

    def get_config(self):
        return {
            "input_shape": self.data_shape,
            "num_classes": self.num_classes,
            "latent_dim": self.latent_dim,
            "hidden_units": self.hidden_units,
            "activation": self.activation,
            "likelihood": self.likelihood_name,
            "kl_z_weight": self.kl_z_weight,
        }

    def q_z(self, x, training=False):
        """q(z | x): ``x`` [batch, *input_shape] -> Normal over [batch, latent_dim]."""
        return self.posterior_z(self.encoder(x, training=training))

    def p_x(self, z, training=False):
        """p(x | z): ``z`` [batch, latent_dim] -> distribution over [batch, *input_shape]."""
        return self.likelihood(self.decoder_network(z, training=training))

    def compute_losses(self, batch, training=False):
        x, y, y_mask = batch["x"], batch["y"], batch["y_mask"]
        x = as_input(x, self.data_shape, "x")
        q = self.q_z(x, training=training)
        log_likelihood = self.p_x(q.sample(), training=training).log_prob(x)
        kl_z = tfd.kl_divergence(q, self.prior_z)
        bound = objectives.elbo(log_likelihood, [self.kl_z_weight * kl_z])
        logits = self.classifier_head(tf.stop_gradient(q.mean()))
        cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(y, tf.int32) * tf.cast(y_mask, tf.int32), logits=logits
        )
        classification = objectives.masked_mean(cross_entropy, y_mask)
        losses = {
            "loss": -tf.reduce_mean(bound) + classification,
            "reconstruction": -tf.reduce_mean(log_likelihood),
            "kl_z": tf.reduce_mean(kl_z),
            "classification": classification,
        }
        return losses, tf.nn.softmax(logits)

    def classify(self, images):
        images = as_input(images, self.data_shape)
        probabilities = tf.nn.softmax(self.classifier_head(self.q_z(images).mean()))
        return {"probabilities": probabilities, "class": tf.argmax(probabilities, axis=-1)}

    def encode(self, images):
        """``images`` [batch, *input_shape] -> ``mean`` and ``scale`` of q(z | x), [batch, latent_dim]."""
        images = as_input(images, self.data_shape)
        q = self.q_z(images)
        return {"mean": q.mean(), "scale": q.stddev()}

    def reconstruct(self, images):
        return {"reconstruction": self.p_x(self.encode(images)["mean"]).mean()}

    def generate(self, latent):
        """``latent`` [batch, latent_dim] -> ``images``, the mean of p(x | z)."""
        latent = as_input(latent, (self.latent_dim,), "latent")
        return {"images": self.p_x(latent).mean()}

    def generate_signature(self):
        return [tf.TensorSpec((None, self.latent_dim), tf.float32, name="latent")]


class M1M2(GenerativeModel):
    """M2 stacked on a frozen M1: x -> z1 (M1 encoder) -> M2 over z1 with a Gaussian likelihood.

    Kingma et al.'s recipe: train ``model.m1`` first (an ordinary M1), then call
    ``freeze_m1(images)``, which freezes it and keeps only the *active* latent dimensions,
    those whose posterior mean varies over the data (standard deviation above
    ``active_threshold``); the others sit at the prior and would feed M2 pure noise.  M2
    then learns from a fresh sample z1 ~ q(z1 | x) of the active dimensions every step.

    Args:
      m1_latent_dim, m2_latent_dim: sizes of z1 and z2.
      m1_hidden_units: M1's hidden widths (default: ``hidden_units``).
      hidden_units, activation: M2's networks (and M1's activation).
      active_dims: indices of the z1 dimensions M2 reads; None for all (before selection).
      active_threshold: the posterior-mean standard deviation a dimension needs to be kept.
      alpha, num_examples, num_labelled: as for M2.
    """

    loss_names = M2.loss_names
    xla_incompatibility = M2.xla_incompatibility

    def __init__(
        self,
        input_shape,
        num_classes,
        m1_latent_dim=50,
        m2_latent_dim=50,
        hidden_units=(500,),
        m1_hidden_units=None,
        activation="softplus",
        likelihood="bernoulli",
        alpha=0.1,
        num_examples=None,
        num_labelled=None,
        active_dims=None,
        active_threshold=0.1,
        **kwargs,
    ):
        super().__init__(input_shape, num_classes, **kwargs)
        m1_hidden_units = tuple(hidden_units if m1_hidden_units is None else m1_hidden_units)
        self.m1 = M1(
            input_shape, num_classes, latent_dim=m1_latent_dim, hidden_units=m1_hidden_units,
            activation=activation, likelihood=likelihood, name="m1",
        )
        if not active_threshold >= 0:
            raise ValueError(f"active_threshold: expected a non-negative standard deviation, received {active_threshold}")
        self._m2_arguments = dict(
            latent_dim=m2_latent_dim, hidden_units=hidden_units, activation=activation, likelihood="gaussian",
            alpha=alpha, num_examples=num_examples, num_labelled=num_labelled, name="m2",
        )
        self._config = {
            "input_shape": self.data_shape, "num_classes": self.num_classes,
            "m1_latent_dim": int(m1_latent_dim), "m2_latent_dim": int(m2_latent_dim),
            "hidden_units": tuple(hidden_units), "m1_hidden_units": m1_hidden_units, "activation": activation,
            "likelihood": likelihood, "alpha": alpha, "num_examples": num_examples, "num_labelled": num_labelled,
            "active_threshold": float(active_threshold),
        }
        self._use_dims(range(int(m1_latent_dim)) if active_dims is None else active_dims)

    def _use_dims(self, dims):
        dims = sorted(int(d) for d in dims)
        latent = self._config["m1_latent_dim"]
        if not dims or dims[0] < 0 or dims[-1] >= latent or len(set(dims)) != len(dims):
            raise ValueError(f"active_dims: expected distinct indices in [0, {latent}), at least one; received {dims}")
        self.active_dims = dims
        self._active = tf.constant(dims, tf.int32)
        if hasattr(self, "m2"):
            if self.built:
                raise ValueError("freeze_m1(images) chooses M2's input and must come before the stack is built or trained")
            self._tracker.untrack(self.m2)  # the M2 over all dimensions is replaced, not kept beside
        self.m2 = M2((len(dims),), self.num_classes, **self._m2_arguments)

    def get_config(self):
        return {**self._config, "active_dims": list(self.active_dims)}

    def freeze_m1(self, images=None, batch_size=1000):
        """Stop training M1; with ``images`` [n, *input_shape], keep only its active dimensions.

        Call it before M2 is trained: choosing the dimensions builds a new M2 over them.
        Returns the active dimensions.
        """
        self.m1.trainable = False
        if images is not None:
            means = np.concatenate([self.m1.encode(images[i:i + batch_size])["mean"].numpy()
                                    for i in range(0, len(images), batch_size)])
            spread = means.std(axis=0)
            active = np.flatnonzero(spread > self._config["active_threshold"])
            if active.size == 0:
                raise ValueError(
                    f"no M1 latent dimension has a posterior-mean standard deviation above active_threshold="
                    f"{self._config['active_threshold']} (largest {spread.max():.3g}); train M1 longer or lower it")
            self._use_dims(active)
        return list(self.active_dims)

    def _active_part(self, z1):
        return tf.gather(z1, self._active, axis=-1)

    def _full_z1(self, active_z1):
        """Active z1 dimensions [batch, n_active] back to [batch, m1_latent_dim], the others at the prior mean 0."""
        latent = self._config["m1_latent_dim"]
        return tf.transpose(tf.scatter_nd(self._active[:, None], tf.transpose(active_z1),
                                          [latent, tf.shape(active_z1)[0]]))

    def compute_losses(self, batch, training=False):
        x = as_input(batch["x"], self.data_shape, "x")
        # M1 is frozen: its sample is data for M2, and no gradient flows back into it.
        z1 = tf.stop_gradient(self._active_part(self.m1.q_z(x).sample()))
        return self.m2.compute_losses({**batch, "x": z1}, training=training)

    def _features(self, images):
        return self._active_part(self.m1.encode(images)["mean"])

    def classify(self, images):
        return self.m2.classify(self._features(images))

    def encode(self, images):
        """q(z2 | z1, y) at the predicted class, with z1 the M1 posterior mean (active dimensions)."""
        return self.m2.encode(self._features(images))

    def reconstruct(self, images):
        z1 = self.m2.reconstruct(self._features(images))["reconstruction"]
        return {"reconstruction": self.m1.p_x(self._full_z1(z1)).mean()}

    def generate(self, labels, latent):
        """``labels`` int [batch], ``latent`` z2 [batch, m2_latent_dim] -> ``images`` [batch, *input_shape]."""
        z1 = self.m2.generate(labels, latent)["images"]
        return {"images": self.m1.p_x(self._full_z1(z1)).mean()}

    def generate_signature(self):
        return self.m2.generate_signature()
