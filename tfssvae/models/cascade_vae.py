"""CascadeVAE (Jeong & Song 2019): continuous factors by a cascading KL penalty, a discrete
factor by alternating exact assignment.

Every continuous dimension starts penalised by ``beta_h``; stage after stage one more
dimension is relieved to ``beta_l``, so the dimensions pick up factors one at a time.
From ``assign_start`` on, each training step first chooses the discrete code d of the
whole batch: the unaries u_ik = -log p(x_i | z_i, e_k) for every value k come from a
forward pass without gradient, a min-cost flow (``tfssvae.assignment``, solved on the
host through ``tf.numpy_function``) adds ``pair_penalty`` per pair of examples sharing a
value, and the gradient step then backpropagates through the decoder at the chosen codes
only.  Before ``assign_start`` the decoder sees the all-zero code.  At test time d is
the arg-min of the unaries.

Why the step is cheap: the decoder's first dense layer over ``[z, e_k]`` is
``networks.CodeDense``, which applies its kernel to z once and adds row k of the code
block as a bias, so the K-fold unary pass starts from ``[batch, K, 256]`` without a
K-fold copy of z; no gradient is ever taken through the K decoder passes (d is a
discrete choice: the loss only depends on the decoder at the chosen code); and the
chosen code's forward pass is not made again: its layer outputs are gathered from the
unary pass and the backward pass runs through them (``networks.replay``), so a step
costs the warm-up step plus K - 1 decoder passes forward (about 0.6x the warm-up's
speed, against 0.55x with the pass made again; ``benchmarks/RESULTS.md``).

The network is the official code's (snu-mllab/DisentanglementICML19, ``encoder1_64`` /
``decoder1_64``): encoder conv 4x4 stride 2 with 32, 32, 64, 64 filters (ReLU), FC 256
(ReLU), a linear FC to the mean and the raw scale, scale = softplus(raw); decoder FC 256,
FC 4x4x64 (ReLU), transposed convs 4x4 stride 2 with 64, 32, 32 filters (ReLU) and one
with 1 filter giving the pixel logits.  As there, conv and transposed-conv kernels start
He-normal and the dense kernels Glorot-uniform (TF-slim's default for its fully connected
layers), and every kernel carries an L2 penalty ``l2_weight * sum(w ** 2)`` (slim's
``l2_regularizer(4e-5)`` is ``4e-5 * sum(w ** 2) / 2``, so 2e-5 here) added to the loss.

The schedule matches the official code.  With stages of ``relieve_every`` iterations,
dimension i + 1 is relieved at the start of stage i (the first one from iteration 0),
except that the stage in which the assignment starts relieves no dimension (the official
``idx = min(train_idx, nconti)`` once ``train_idx >= ntime``): with the defaults the six
dimensions are relieved at iterations 0, 20k, 40k, 60k, 100k and 120k, d is learned from
80k.  ``assign_start=None`` never learns d (the paper's ablation without the discrete
factor: the decoder always sees the zero code and ``encode`` gives d = 0).  The step size
is the run config's: ``configs/cascade_vae.py`` sets the official staircase (Adam 1e-4,
times 0.3 every 50k iterations).  Differences kept: the scale has a floor of 1e-4 (``DiagonalNormal``'s min_scale;
the official code adds 1e-8 inside the log of its KL instead), and the KL is the exact
Gaussian KL, the same value.

Checkpoints written before this network (issue 9) do not restore into it.
"""
import numpy as np
import tensorflow as tf
import keras

from tfssvae import assignment, distributions, fused, networks
from tfssvae.models.base import GenerativeModel, as_input, one_hot_classes


def relieve_schedule(latent_dim, relieve_every, assign_start):
    """Iterations at which the 1st, 2nd, ... of ``latent_dim`` dimensions are relieved.

    Stage s covers iterations ``[s * relieve_every, (s + 1) * relieve_every)``; each stage
    relieves one more dimension, starting with stage 0, except the first stage starting at
    or after ``assign_start``, which the discrete code gets instead (official schedule);
    ``assign_start=None`` (d never learned) skips no stage.

    Returns:
      A list of ``latent_dim`` non-decreasing ints.
    """
    latent_dim, relieve_every = int(latent_dim), int(relieve_every)
    assign_start = np.inf if assign_start is None else int(assign_start)
    if relieve_every < 1:
        raise ValueError(f"relieve_every: expected a positive number of iterations, received {relieve_every}")
    starts, stage, skipped = [], 0, False
    while len(starts) < latent_dim:
        start = stage * relieve_every
        if not skipped and start >= assign_start:
            skipped = True  # the stage where d starts being learned relieves no dimension
        else:
            starts.append(start)
        stage += 1
    return starts


def standard_normal_kl(mean, scale):
    """KL(N(mean, scale^2) || N(0, 1)) per dimension: the same shape as ``mean`` and ``scale``."""
    return 0.5 * (tf.square(mean) + tf.square(scale) - 1.0) - tf.math.log(scale)


class CascadeVAE(GenerativeModel):
    """The CascadeVAE on images (dSprites by default).

    Args:
      input_shape: ``(64, 64, 1)`` for sprites (height and width divisible by
        ``2 ** (len(decoder_filters) + 1)``).
      num_classes: classes of the data's label (sprites: the 3 shapes); used for metrics only.
      latent_dim: continuous dimensions (6 in the paper).
      discrete_size: values of d (3 in the paper), at least 2.
      beta_h, beta_l: KL weights of penalised and relieved dimensions.
      relieve_every: iterations of a stage of the schedule (see ``relieve_schedule``).
      relieve_at: explicit iterations at which the 1st, 2nd, ... dimension is relieved,
        at most ``latent_dim`` entries; None: ``relieve_schedule(...)``.
      assign_start: iteration from which d is chosen by the assignment (before it, the
        decoder sees a zero code); None: never (d is always 0).
      pair_penalty: cost of every pair of batch examples sharing a value of d.
      solver: ``"fast"`` or ``"networkx"`` (see ``assignment.assign``).
      filters: encoder conv filters.
      dense_units: width of the encoder's and the decoder's hidden dense layer.
      decoder_filters: filters of the decoder's hidden transposed convs; the first is
        also the channels of the decoder's starting feature map.
      l2_weight: L2 penalty per squared kernel weight (Keras convention), >= 0.
      global_assignment: under a ``tf.distribute`` strategy with several replicas, choose d
        by one assignment over the global batch (as on one device; ``_global_codes``);
        False: each replica assigns its own share (pairs sharing a value are then counted
        within a share only).  No effect on one device.
      d_from_labels: from ``assign_start`` on, d is the batch's label ``y`` (the sprites'
        shape) instead of the assignment's choice: not the method, a diagnostic of it
        (what the same objective reaches when d is the shape; RESULTS.md, issue 9).  Test
        time still takes the arg-min of the unaries.
    """

    loss_names = ("loss", "reconstruction", "kl_z", "weighted_kl", "l2_penalty", "relieved_dims")
    xla_incompatibility = "cascade_vae solves its assignment on the host (tf.numpy_function), which XLA cannot compile"
    has_classifier = False
    nullable_arguments = ("relieve_at", "assign_start")

    def __init__(self, input_shape, num_classes, latent_dim=6, discrete_size=3, beta_h=10.0, beta_l=0.1,
                 relieve_every=20000, relieve_at=None, assign_start=80000, pair_penalty=0.001, solver="fast",
                 filters=(32, 32, 64, 64), dense_units=256, decoder_filters=(64, 32, 32), l2_weight=2e-5,
                 global_assignment=True, d_from_labels=False, **kwargs):
        super().__init__(input_shape, num_classes, **kwargs)
        if int(discrete_size) < 2:
            raise ValueError(f"discrete_size: expected at least 2 values, received {discrete_size}")
        if int(latent_dim) < 1:
            raise ValueError(f"latent_dim: expected a positive integer, received {latent_dim}")
        if assign_start is not None and int(assign_start) < 0:
            raise ValueError(f"assign_start: expected an iteration >= 0, received {assign_start}")
        if d_from_labels and assign_start is None:
            raise ValueError("d_from_labels: d is never used when assign_start is None; give assign_start")
        if relieve_at is None:
            relieve_at = relieve_schedule(latent_dim, relieve_every, assign_start)
        relieve_at = [int(t) for t in relieve_at]
        if len(relieve_at) > int(latent_dim):
            raise ValueError(
                f"relieve_at: the schedule relieves {len(relieve_at)} dimensions but there are only "
                f"latent_dim={latent_dim}")
        if sorted(relieve_at) != relieve_at or (relieve_at and relieve_at[0] < 0):
            raise ValueError(f"relieve_at: expected non-negative, non-decreasing iterations, received {relieve_at}")
        if solver not in assignment.SOLVERS:
            raise ValueError(f"solver: expected one of {assignment.SOLVERS}, received {solver!r}")
        if not (beta_h >= 0 and beta_l >= 0 and pair_penalty >= 0 and l2_weight >= 0):
            raise ValueError(f"beta_h, beta_l, pair_penalty, l2_weight: expected non-negative, received "
                             f"{beta_h}, {beta_l}, {pair_penalty}, {l2_weight}")
        self._config = dict(
            input_shape=self.data_shape, num_classes=self.num_classes, latent_dim=int(latent_dim),
            discrete_size=int(discrete_size), beta_h=float(beta_h), beta_l=float(beta_l),
            relieve_at=relieve_at, assign_start=None if assign_start is None else int(assign_start),
            pair_penalty=float(pair_penalty),
            solver=solver, filters=tuple(filters), dense_units=int(dense_units),
            decoder_filters=tuple(decoder_filters), l2_weight=float(l2_weight),
            global_assignment=bool(global_assignment), d_from_labels=bool(d_from_labels),
        )
        self.latent_dim, self.discrete_size = int(latent_dim), int(discrete_size)
        l2 = keras.regularizers.L2(float(l2_weight)) if l2_weight > 0 else None
        self.encoder = networks.conv_encoder(
            self.data_shape, distributions.DiagonalNormal.params_size(self.latent_dim), filters=tuple(filters),
            dense_units=dense_units, conv_initializer="he_normal", kernel_regularizer=l2, name="encoder")
        # The decoder in two parts: the first dense layer over [z, code], then the rest.
        self.decoder_input = networks.CodeDense(dense_units, self.discrete_size, activation="relu",
                                                kernel_regularizer=l2, name="decoder_input")
        self.decoder_input.build([(None, self.latent_dim), (None, self.discrete_size)])
        self.decoder_body = networks.deconv_decoder(
            int(dense_units), self.data_shape, filters=tuple(decoder_filters), conv_initializer="he_normal",
            kernel_regularizer=l2, name="decoder")
        self.posterior_z = distributions.DiagonalNormal(self.latent_dim, name="q_z")
        self.likelihood = distributions.Bernoulli(self.data_shape, name="likelihood")

    def get_config(self):
        return dict(self._config)

    # --- schedule, decoder, assignment ------------------------------------------------------

    def kl_weights(self, iteration):
        """``[latent_dim]`` KL weights at ``iteration``: beta_l for the relieved leading dims, beta_h after;
        and the number of relieved dims."""
        schedule = tf.constant(self._config["relieve_at"] or [np.iinfo(np.int64).max], tf.int64)
        relieved = tf.reduce_sum(tf.cast(tf.cast(iteration, tf.int64) >= schedule, tf.int32))
        relieved = tf.minimum(relieved, len(self._config["relieve_at"]))
        is_relieved = tf.range(self.latent_dim) < relieved
        return tf.where(is_relieved, self._config["beta_l"], self._config["beta_h"]), relieved

    def decode_logits(self, z, codes):
        """``z`` [batch, latent_dim] and ``codes`` [batch, discrete_size] (one-hot or zero) -> pixel
        logits [batch, *input_shape] (float32 whatever the precision policy)."""
        return tf.cast(self.decoder_body(self.decoder_input([z, codes])), tf.float32)

    def unaries(self, x, z):
        """u[i, k] = -log p(x_i | z_i, e_k) for every value k: ``[batch, K]``, float32.

        ``x`` [batch, *input_shape], ``z`` [batch, latent_dim].  One decoder pass over
        ``batch * K`` rows that share z's product with the first dense kernel.
        """
        return self._unary_pass(x, z)[0]

    def _unary_pass(self, x, z):
        """The unaries ``[batch, K]`` and the decoder body's layer outputs of that pass, rows
        ``i * K + k`` (what ``networks.replay`` needs for the backward pass at the chosen codes)."""
        K = self.discrete_size
        hidden = self.decoder_input.every_code(z)  # [batch, K, dense_units]
        hidden = tf.reshape(hidden, [-1, hidden.shape[-1]])
        outputs = networks.layer_outputs(self.decoder_body, hidden)  # the last: logits [batch * K, H, W, C]
        logits = tf.reshape(tf.cast(outputs[-1], tf.float32), [-1, K, int(np.prod(self.data_shape))])
        # x broadcasts over the K codes inside the fused kernel: no K-fold copy of the images.
        pixels = tf.reshape(x, [-1, 1, int(np.prod(self.data_shape))])
        return -tf.reduce_sum(fused.bernoulli_log_prob(pixels, logits), axis=-1), outputs

    def _solve(self, unaries):
        """The batch's optimal code by min-cost flow, on the host (works per replica): int32 [batch]."""
        def solve(u):
            return assignment.assign(u, self._config["pair_penalty"], self._config["solver"]).astype(np.int32)

        chosen = tf.numpy_function(solve, [tf.stop_gradient(unaries)], tf.int32, stateful=False)
        return tf.ensure_shape(chosen, [unaries.shape[0]])

    def _global_codes(self, x, z, started, replica):
        """This replica's one-hot codes ``[batch, K]`` from ONE assignment over the global batch.

        Every replica's unaries ``[share, K]`` are gathered (in replica order) into
        ``[global batch, K]``; replica 0 solves the min-cost flow over all of them, the
        others contribute zeros, and a cross-replica sum hands every replica the whole
        solution, of which it keeps its own rows.  So the codes are those one device would
        choose for the global batch.  Before ``started`` every code is the zero code.  The
        exchanges run whether or not ``started`` (a cross-replica exchange cannot sit inside
        a ``tf.cond`` under ``MirroredStrategy``); before it they carry zeros.

        Args:
          x: ``[batch, *input_shape]`` this replica's images.
          z: ``[batch, latent_dim]`` their sampled codes.
          started: bool scalar, whether d is learned yet.
          replica: the ``tf.distribute.ReplicaContext``.
        """
        K = self.discrete_size
        local = tf.shape(z)[0]
        unaries = tf.cond(started, lambda: self.unaries(x, tf.stop_gradient(z)), lambda: tf.zeros([local, K]))
        everyone = replica.all_gather(tf.stop_gradient(unaries), axis=0)  # [global batch, K]
        sizes = replica.all_gather(tf.reshape(local, [1]), axis=0)  # [replicas]: shares may differ
        me = replica.replica_id_in_sync_group
        solver = tf.logical_and(started, tf.equal(me, 0))
        codes = tf.cond(solver, lambda: tf.one_hot(self._solve(everyone), K), lambda: tf.zeros_like(everyone))
        codes = replica.all_reduce(tf.distribute.ReduceOp.SUM, codes)  # exact: one-hot rows plus zeros
        start = tf.reduce_sum(sizes[:me])
        return codes[start:start + local]

    def sample_noise(self, shape):
        """Standard normal noise of the reparameterised sample z = mean + scale * noise."""
        return tf.random.normal(shape)

    def compute_losses(self, batch, training=False):
        x = as_input(batch["x"], self.data_shape, "x")
        q = self.posterior_z(self.encoder(x, training=training))
        mean, scale = q.mean(), q.stddev()
        z = mean + scale * self.sample_noise(tf.shape(mean))
        iteration = self.optimizer.iterations if training else tf.constant(np.iinfo(np.int64).max, tf.int64)
        weights, relieved = self.kl_weights(iteration)
        no_code = tf.zeros([tf.shape(z)[0], self.discrete_size])  # the decoder's input before d is learned
        if self._config["assign_start"] is None:  # the ablation without d: always the zero code
            reconstruction = -self.likelihood(self.decode_logits(z, no_code)).log_prob(x)
        elif training:
            started = tf.cast(iteration, tf.int64) >= self._config["assign_start"]

            def assigned():
                # d by the flow, and the decoder's layer outputs at it: the rows of the unaries' pass
                # (no gradient: d is a discrete choice) at the chosen codes.
                unaries, stored = self._unary_pass(x, tf.stop_gradient(z))
                d = self._solve(unaries)
                rows = tf.range(tf.shape(d)[0]) * self.discrete_size + d
                return [tf.one_hot(d, self.discrete_size)] + [tf.gather(s, rows) for s in stored]

            def warm_up():  # the zero code, and the decoder's layer outputs at it
                hidden = self.decoder_input([tf.stop_gradient(z), no_code])
                return [no_code] + networks.layer_outputs(self.decoder_body, hidden)

            replica = tf.distribute.get_replica_context()
            if self._config["d_from_labels"]:
                labels = one_hot_classes(batch["y"], self.discrete_size)
                logits = self.decode_logits(z, tf.cond(started, lambda: labels, lambda: no_code))
            elif self._config["global_assignment"] and replica is not None and replica.num_replicas_in_sync > 1:
                logits = self.decode_logits(z, tf.stop_gradient(self._global_codes(x, z, started, replica)))
            else:  # one device, or each replica's share assigned on its own
                # No pass is made twice: the gradient is the backward pass through the stored one.  The
                # stop keeps the tape out of the cond (else it would backpropagate zeros through the K passes).
                codes, *stored = [tf.stop_gradient(t) for t in tf.cond(started, assigned, warm_up)]
                logits = networks.replay(self.decoder_body, self.decoder_input([z, codes]), stored)
                logits = tf.cast(logits, tf.float32)
            reconstruction = -self.likelihood(logits).log_prob(x)
        else:
            reconstruction = tf.reduce_min(self.unaries(x, z), axis=-1)
        kl_per_dim = standard_normal_kl(mean, scale)
        weighted_kl = tf.reduce_sum(kl_per_dim * weights, axis=-1)
        l2_penalty = tf.add_n([tf.cast(loss, tf.float32) for loss in self.losses]) if self.losses \
            else tf.constant(0.0)
        losses = {
            "loss": tf.reduce_mean(reconstruction + weighted_kl) + l2_penalty,
            "reconstruction": tf.reduce_mean(reconstruction),
            "kl_z": tf.reduce_mean(tf.reduce_sum(kl_per_dim, axis=-1)),
            "weighted_kl": tf.reduce_mean(weighted_kl),
            "l2_penalty": l2_penalty,
            "relieved_dims": tf.cast(relieved, tf.float32),
        }
        return losses, None

    # --- serving ------------------------------------------------------------------------------

    def encode(self, images):
        """``images`` [batch, 64, 64, 1] -> ``mean``, ``scale`` [batch, latent_dim] and ``d`` int64 [batch],
        the arg-min of the unaries at the posterior mean (no flow at test time)."""
        images = as_input(images, self.data_shape)
        q = self.posterior_z(self.encoder(images))
        if self._config["assign_start"] is None:  # d never learned
            d = tf.zeros(tf.shape(images)[:1], tf.int64)
        else:
            d = tf.argmin(self.unaries(images, q.mean()), axis=-1)
        return {"mean": q.mean(), "scale": q.stddev(), "d": d}

    def reconstruct(self, images):
        code = self.encode(images)
        return {"reconstruction": self.generate(code["mean"], tf.cast(code["d"], tf.int32))["images"]}

    def generate(self, latent, d):
        """``latent`` [batch, latent_dim] and ``d`` int [batch] -> ``images``, the mean of p(x | z, d)."""
        latent = as_input(latent, (self.latent_dim,), "latent")
        codes = one_hot_classes(d, self.discrete_size)
        return {"images": self.likelihood(self.decode_logits(latent, codes)).mean()}

    def generate_signature(self):
        return [tf.TensorSpec((None, self.latent_dim), tf.float32, name="latent"),
                tf.TensorSpec((None,), tf.int32, name="d")]
