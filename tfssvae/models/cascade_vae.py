"""CascadeVAE (Jeong & Song 2019): continuous factors by a cascading KL penalty, a discrete
factor by alternating exact assignment.

Every continuous dimension starts penalised by beta_h; at each step of the schedule one
more dimension is relieved to beta_l, so the dimensions pick up factors one at a time.
After a warm-up, each training step first chooses the discrete code d of the whole batch
by a min-cost flow (``tfssvae.assignment``, solved on the host through
``tf.numpy_function``): unaries u_ik = -log p(x_i | z_i, e_k) for every value k in one
batched decoder pass, plus ``pair_penalty`` per pair of examples sharing a value; the
gradient step then uses the chosen d (the loss reads u at the chosen values, so no second
decoder pass is needed).  At test time d is the arg-min of the unaries.
"""
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfssvae import assignment, distributions, networks
from tfssvae.models.base import GenerativeModel, as_input, one_hot_classes, standard_normal

tfd = tfp.distributions


class CascadeVAE(GenerativeModel):
    """The CascadeVAE on images (dSprites by default).

    Args:
      input_shape: ``(64, 64, 1)`` for sprites.
      num_classes: classes of the data's label (sprites: the 3 shapes); used for metrics only.
      latent_dim: continuous dimensions (6 in the paper).
      discrete_size: values of d (3 in the paper), at least 2.
      beta_h, beta_l: KL weights of penalised and relieved dimensions.
      relieve_at: iterations at which the 1st, 2nd, ... dimension is relieved; at most
        ``latent_dim`` entries.  Default: every ``relieve_every`` iterations.
      assign_start: iteration from which d is chosen by the assignment (before it, the
        decoder sees a zero code).
      pair_penalty: cost of every pair of batch examples sharing a value of d.
      solver: ``"fast"`` or ``"networkx"`` (see ``assignment.assign``).
    """

    loss_names = ("loss", "reconstruction", "kl_z", "weighted_kl", "relieved_dims")
    xla_incompatibility = "cascade_vae solves its assignment on the host (tf.numpy_function), which XLA cannot compile"
    has_classifier = False

    def __init__(self, input_shape, num_classes, latent_dim=6, discrete_size=3, beta_h=10.0, beta_l=0.1,
                 relieve_every=20000, relieve_at=None, assign_start=80000, pair_penalty=0.001, solver="fast",
                 filters=(32, 32, 64, 64), dense_units=256, **kwargs):
        super().__init__(input_shape, num_classes, **kwargs)
        if int(discrete_size) < 2:
            raise ValueError(f"discrete_size: expected at least 2 values, received {discrete_size}")
        if int(latent_dim) < 1:
            raise ValueError(f"latent_dim: expected a positive integer, received {latent_dim}")
        if relieve_at is None:
            relieve_at = [int(relieve_every) * (i + 1) for i in range(int(latent_dim))]
        relieve_at = [int(t) for t in relieve_at]
        if len(relieve_at) > int(latent_dim):
            raise ValueError(
                f"relieve_at: the schedule relieves {len(relieve_at)} dimensions but there are only "
                f"latent_dim={latent_dim}")
        if sorted(relieve_at) != relieve_at or (relieve_at and relieve_at[0] < 0):
            raise ValueError(f"relieve_at: expected non-negative, non-decreasing iterations, received {relieve_at}")
        if solver not in assignment.SOLVERS:
            raise ValueError(f"solver: expected one of {assignment.SOLVERS}, received {solver!r}")
        if not (beta_h >= 0 and beta_l >= 0 and pair_penalty >= 0):
            raise ValueError(f"beta_h, beta_l, pair_penalty: expected non-negative, received "
                             f"{beta_h}, {beta_l}, {pair_penalty}")
        self._config = dict(
            input_shape=self.data_shape, num_classes=self.num_classes, latent_dim=int(latent_dim),
            discrete_size=int(discrete_size), beta_h=float(beta_h), beta_l=float(beta_l),
            relieve_at=relieve_at, assign_start=int(assign_start), pair_penalty=float(pair_penalty),
            solver=solver, filters=tuple(filters), dense_units=int(dense_units),
        )
        self.latent_dim, self.discrete_size = int(latent_dim), int(discrete_size)
        self.encoder = networks.conv_encoder(
            self.data_shape, distributions.DiagonalNormal.params_size(self.latent_dim), filters=tuple(filters),
            dense_units=dense_units, name="encoder")
        self.decoder_network = networks.conv_decoder(
            [(self.latent_dim,), (self.discrete_size,)], self.data_shape, filters=tuple(reversed(filters)),
            dense_units=dense_units, name="decoder")
        self.posterior_z = distributions.DiagonalNormal(self.latent_dim, name="q_z")
        self.likelihood = distributions.Bernoulli(self.data_shape, name="likelihood")
        self.prior_z = standard_normal(self.latent_dim)

    def get_config(self):
        return dict(self._config)

    # --- schedule and assignment ----------------------------------------------------------

    def kl_weights(self, iteration):
        """``[latent_dim]`` KL weights at ``iteration``: beta_l for the relieved leading dims, beta_h after."""
        schedule = tf.constant(self._config["relieve_at"] or [np.iinfo(np.int64).max], tf.int64)
        relieved = tf.reduce_sum(tf.cast(tf.cast(iteration, tf.int64) >= schedule, tf.int32))
        relieved = tf.minimum(relieved, len(self._config["relieve_at"]))
        is_relieved = tf.range(self.latent_dim) < relieved
        return tf.where(is_relieved, self._config["beta_l"], self._config["beta_h"]), relieved

    def unaries(self, x, z):
        """u[i, k] = -log p(x_i | z_i, e_k) for every value k, one batched decoder pass: ``[batch, K]``."""
        K = self.discrete_size
        z_all = tf.repeat(z, K, axis=0)  # row i * K + k: example i with value k
        codes = tf.tile(tf.eye(K, dtype=z.dtype), [tf.shape(z)[0], 1])
        log_p = self.likelihood(self.decoder_network([z_all, codes])).log_prob(tf.repeat(x, K, axis=0))
        return -tf.reshape(log_p, [-1, K])

    def _solve(self, unaries):
        """The batch's optimal code by min-cost flow, on the host (works per replica)."""
        def solve(u):
            return assignment.assign(u, self._config["pair_penalty"], self._config["solver"]).astype(np.int32)

        chosen = tf.numpy_function(solve, [tf.stop_gradient(unaries)], tf.int32, stateful=False)
        return tf.ensure_shape(chosen, [unaries.shape[0]])

    def compute_losses(self, batch, training=False):
        x = as_input(batch["x"], self.data_shape, "x")
        q = self.posterior_z(self.encoder(x, training=training))
        z = q.sample()
        iteration = self.optimizer.iterations if training else tf.constant(np.iinfo(np.int64).max, tf.int64)
        weights, relieved = self.kl_weights(iteration)
        if training:
            # Before the warm-up ends the decoder sees no code (all-zero) and d is not learned,
            # so the K-fold unary pass is only built inside the branch that uses it.
            started = tf.cast(iteration, tf.int64) >= self._config["assign_start"]
            no_code = tf.zeros([tf.shape(z)[0], self.discrete_size])

            def assigned():
                unaries = self.unaries(x, z)
                return tf.gather(unaries, self._solve(unaries), batch_dims=1)

            reconstruction = tf.cond(
                started, assigned, lambda: -self.likelihood(self.decoder_network([z, no_code])).log_prob(x))
        else:
            reconstruction = tf.reduce_min(self.unaries(x, z), axis=-1)
        # Per-dimension analytic KL of N(mu, sigma) to N(0, 1).
        kl_per_dim = tfd.kl_divergence(tfd.Normal(q.mean(), q.stddev()), tfd.Normal(0.0, 1.0))
        weighted_kl = tf.reduce_sum(kl_per_dim * weights, axis=-1)
        losses = {
            "loss": tf.reduce_mean(reconstruction + weighted_kl),
            "reconstruction": tf.reduce_mean(reconstruction),
            "kl_z": tf.reduce_mean(tf.reduce_sum(kl_per_dim, axis=-1)),
            "weighted_kl": tf.reduce_mean(weighted_kl),
            "relieved_dims": tf.cast(relieved, tf.float32),
        }
        return losses, None

    # --- serving ------------------------------------------------------------------------------

    def encode(self, images):
        """``images`` [batch, 64, 64, 1] -> ``mean``, ``scale`` [batch, latent_dim] and ``d`` int64 [batch],
        the arg-min of the unaries at the posterior mean (no flow at test time)."""
        images = as_input(images, self.data_shape)
        q = self.posterior_z(self.encoder(images))
        d = tf.argmin(self.unaries(images, q.mean()), axis=-1)
        return {"mean": q.mean(), "scale": q.stddev(), "d": d}

    def reconstruct(self, images):
        code = self.encode(images)
        return {"reconstruction": self.generate(code["mean"], tf.cast(code["d"], tf.int32))["images"]}

    def generate(self, latent, d):
        """``latent`` [batch, latent_dim] and ``d`` int [batch] -> ``images``, the mean of p(x | z, d)."""
        latent = as_input(latent, (self.latent_dim,), "latent")
        codes = one_hot_classes(d, self.discrete_size)
        return {"images": self.likelihood(self.decoder_network([latent, codes])).mean()}

    def generate_signature(self):
        return [tf.TensorSpec((None, self.latent_dim), tf.float32, name="latent"),
                tf.TensorSpec((None,), tf.int32, name="d")]
