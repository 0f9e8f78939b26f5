"""Multi-digit scenes (Siddharth et al. 2017, fourth experiment): count, place and draw digits.

An AIR-style model (after Eslami et al.'s "Attend, Infer, Repeat") declared with
``tfssvae.graph`` and trained with the one objective
(``objectives.partially_supervised_bound``), whose digit count is observed for a
fraction of the canvases.  ``K = max_digits`` steps, ``t = 0..K-1``::

    recognition  (an LSTM over the steps; step t reads the canvas and the residual
                  canvas - sum_{s<t} digit_s through a reader, plus z_where_{t-1} and
                  z_what_{t-1}; the reader is AIR's MLP or, with ``canvas_filters``, a
                  small CNN)
                 q(present_t = 1 | present_{<t} = 1, x, z_{<t}) = sigmoid(a_t)
                 q(z_where_t | x, z_{<t})           Normal, from the LSTM state
                 q(z_what_t | glimpse_t)             Normal, from read_glimpse(x, where_t)
    generation   p(present_t = 1 | present_{t-1} = 1) = sigmoid(b_t), absence absorbing
                 p(z_where_t) = N((raw(side), 0, 0), diag(side_scale, scale, scale)^2)
                 p(z_what_t) = N(0, I_what_dim)
                 digit_t = write_glimpse(sigmoid(decoder(z_what_t)), where(z_where_t))
                 p(x | ...) = Bernoulli(eps + (1 - 2 eps) min(1, sum_t present_t digit_t))

**The count is the one discrete variable, and it is enumerated.**  Absence is
absorbing, so the presence variables ``present_0..K-1`` take only the ``K + 1``
patterns ``1..1 0..0``; they are in one-to-one correspondence with the count
``c = sum_t present_t``.  The trace therefore draws a single discrete variable
``"count"`` over ``0..K`` whose logits are the log-probability of the pattern under the
per-step Bernoullis, ``log q(c) = sum_{t<c} log sigmoid(a_t) + [c < K] log sigmoid(-a_c)``
(and the same formula of ``b`` for p): the same density over presence patterns, and
supervising the count supervises every presence variable (count c: present for t < c,
absent from t = c).  ``graph.Trace`` enumerates one discrete variable, and K + 1 = 4
values is cheap, so the count is summed out exactly (``enumerate=("count", K + 1)``:
K + 1 copies of the batch, copy c holding count c).  Relaxing it instead (Concrete) was
rejected: a relaxed presence is never exactly 0, so a step after a "soft" absence is
neither present nor absent, the absorbing prior scores it with log 0, and the
auxiliary-variable device below (which needs each step exactly present or absent)
would not hold; enumeration also removes the gradient variance of the discrete choice,
AIR's main difficulty.  q(count | x, z) depends on the z's drawn before it (step t's
LSTM state reads z_{<t}), so the K + 1 copies share one draw of every z (the
recognition runs once and ``graph.Trace.variable`` takes that draw for every copy):
the bound is then ``E_{q(z | x)} sum_c q(c | x, z) [log p(x, c, z) - log q(z | x)
- log q(c | x, z)]`` exactly, and the objective's enumeration, which assumes that
``q(c | ...)`` sums to one over the copies of an example, holds.  Independent draws
per copy would make that sum differ from one and add a spurious ``(1 + alpha) log``
of it to the bound.  The recognition runs once a canvas and the digits are drawn once
a canvas: only the likelihood is evaluated K + 1 times.

**Absent steps' z.**  Shapes are static: every step draws z_where_t and z_what_t in
every row.  For a row whose count c has step t >= c absent, the generative model draws
the unused z_t from the recognition density itself, p(z_t | c) = q(z_t | ...), an
auxiliary variable that integrates to one and leaves p(x, c, z_{<c}) unchanged, so the
bound is that of the model without those variables: their log p - log q (and the
analytic KL) is exactly 0.  Present steps use the priors above.

**Where.**  ``z_where`` is unconstrained in R^3 and mapped to the spatial transformer's
``(s, x, y)`` (``tfssvae.spatial``: a square glimpse of side ``s`` canvas widths centred at
``(x, y)`` in [-1, 1] coordinates) by ``s = MIN_SCALE + (1 - MIN_SCALE) sigmoid(z_0)``,
``x = tanh(z_1)``, ``y = tanh(z_2)``: every z is a valid, invertible glimpse on the canvas.

**Likelihood: Bernoulli** on the clipped sum of the written digits.  The canvases are
grey levels in [0, 1] with an exactly black background and saturated strokes, composed by
the data module as a clipped sum (``tfssvae.data.multi_digit``), which ``min(1, sum)``
reproduces; a Bernoulli (cross-entropy, which accepts grey levels) has no scale to learn,
and the ``eps = 1e-3`` floor keeps log 0 away from exact zeros and ones while leaving the
gradient to every digit wherever the sum is below 1.  A Normal with a learned scale was
the alternative; its scale shrinks as reconstructions improve, which sharpens the
likelihood of every stray pixel and pushes the count up to explain residual noise.

Batches are dicts ``{"x": [batch, H, W, 1] canvases in [0, 1], "y": int count [batch] in
0..K, "y_mask": bool [batch]}`` (``data.SemiSupervisedSource`` with the counts as labels),
so the class of the shared steps is the count (``num_classes = K + 1``) and the logged
``error`` is the count error on the canvases whose count is observed.
"""
import itertools
import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfssvae import distributions, figures, networks, objectives, spatial
from tfssvae.data import multi_digit as multi_digit_data
from tfssvae.models.base import GenerativeModel, as_input

tfd = tfp.distributions

MIN_SCALE = 0.1  # smallest glimpse side, in canvas widths: keeps the affine map invertible
PIXEL_EPS = 1e-3  # floor/ceiling of the Bernoulli probabilities


# --------------------------------------------------------------------------- pieces

def where_from_raw(raw):
    """Unconstrained ``z_where`` ``[..., 3]`` -> ``(s, x, y)`` ``[..., 3]`` for ``tfssvae.spatial``."""
    scale = MIN_SCALE + (1.0 - MIN_SCALE) * tf.sigmoid(raw[..., 0])
    return tf.stack([scale, tf.tanh(raw[..., 1]), tf.tanh(raw[..., 2])], axis=-1)


def raw_from_where(where):
    """Inverse of ``where_from_raw``: ``(s, x, y)`` with ``MIN_SCALE < s < 1``, ``|x|, |y| < 1``."""
    where = tf.convert_to_tensor(where, tf.float32)
    fraction = (where[..., 0] - MIN_SCALE) / (1.0 - MIN_SCALE)
    return tf.stack([tf.math.log(fraction) - tf.math.log1p(-fraction), tf.atanh(where[..., 1]),
                     tf.atanh(where[..., 2])], axis=-1)


def count_log_probs(presence_logits):
    """Log-probabilities of the counts ``0..K`` ``[rows, K + 1]`` from per-step logits ``[rows, K]``.

    ``presence_logits[:, t]`` is the logit of step t being present given that steps
    ``0..t-1`` are; absence is absorbing, so
    ``log P(c) = sum_{t<c} log sigmoid(a_t) + [c < K] log sigmoid(-a_c)``; the rows sum to one.
    """
    logits = tf.convert_to_tensor(presence_logits)
    rows = tf.shape(logits)[0]
    zero = tf.zeros([rows, 1], logits.dtype)
    reached = tf.concat([zero, tf.cumsum(-tf.nn.softplus(-logits), axis=1)], axis=1)  # sum_{t<c} log sig(a_t)
    stop = tf.concat([-tf.nn.softplus(logits), zero], axis=1)  # log sig(-a_c), 0 at c = K
    return reached + stop


def presence_from_count(count):
    """Per-step presence ``[rows, K]`` from a count distribution or one-hot ``[rows, K + 1]``:
    ``P(present_t) = P(c > t)`` (exactly 0 or 1 for a one-hot count)."""
    return tf.cumsum(count, axis=1, reverse=True, exclusive=True)[:, :-1]


class MultiDigitModel(GenerativeModel):
    """AIR-style multi-digit model with a partially supervised, enumerated count (module docstring).

    Args:
      input_shape: ``(H, W, C)`` of the canvases (C = 1 for the digit canvases).
      num_classes: ``max_digits + 1`` (the count is the class of the shared steps).
      max_digits: K, the number of steps, >= 1.
      glimpse_size: side of the glimpse read and written at each step, pixels.
      what_dim: size of z_what.
      encoder_units: width of the features read from (canvas, residual) each step (the
        reader's hidden dense layer and its output).
      canvas_filters: filters of the reader's 3x3 stride-2 convolutions, in order; ``()``
        reads the canvas with an MLP (one hidden layer), as AIR does.
      lstm_units: LSTM state size.
      what_units: hidden width of the z_what encoder and of the glimpse decoder.
      alpha: weight of log q(count | x) of supervised canvases beyond the bound.
      presence_prior: initial (or, with ``learn_presence_prior=False``, fixed) prior
        probability that step t is present given that step t-1 is.
      learn_presence_prior: learn the per-step prior continuation logits by the bound.
      where_prior_scale: standard deviation of p(z_where)'s shift components (unconstrained).
      where_prior_side: the glimpse side, in canvas widths, at the mean of p(z_where)'s
        scale component (in (MIN_SCALE, 1); 0.55 puts that mean at 0).
      where_prior_side_scale: standard deviation of p(z_where)'s (unconstrained) scale
        component.  Small, it ties the glimpse to the side above: the likelihood alone
        cannot (a digit drawn small in a large glimpse renders the same).
      num_samples: samples per (example, count) in the objective.
      variant: ``"weighted"`` or ``"iw"`` (``objectives.VARIANTS``).
    """

    loss_names = ("loss", "reconstruction", "classification", "mean_count")

    def __init__(self, input_shape, num_classes, max_digits=3, glimpse_size=20, what_dim=10, encoder_units=256,
                 lstm_units=128, what_units=200, canvas_filters=(), alpha=10.0, presence_prior=0.5,
                 learn_presence_prior=True, where_prior_scale=1.0, where_prior_side=0.55, where_prior_side_scale=1.0,
                 num_samples=1, variant="weighted", **kwargs):
        super().__init__(input_shape, num_classes, **kwargs)
        for name, value in (("max_digits", max_digits), ("glimpse_size", glimpse_size), ("what_dim", what_dim),
                            ("encoder_units", encoder_units), ("lstm_units", lstm_units),
                            ("what_units", what_units), ("num_samples", num_samples)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, received {value!r}")
        if len(self.data_shape) != 3:
            raise ValueError(f"input_shape: expected (height, width, channels), received {input_shape}")
        if self.num_classes != max_digits + 1:
            raise ValueError(f"num_classes: expected max_digits + 1 = {max_digits + 1} (counts 0..{max_digits}), "
                             f"received {num_classes}")
        canvas_filters = tuple(canvas_filters)
        if any(isinstance(f, bool) or not isinstance(f, (int, np.integer)) or f < 1 for f in canvas_filters):
            raise ValueError(f"canvas_filters: expected positive integers, received {canvas_filters!r}")
        if not 0.0 < presence_prior < 1.0:
            raise ValueError(f"presence_prior: expected a probability in (0, 1), received {presence_prior}")
        if not alpha >= 0:
            raise ValueError(f"alpha: expected a non-negative weight, received {alpha}")
        for name, value in (("where_prior_scale", where_prior_scale), ("where_prior_side_scale",
                                                                       where_prior_side_scale)):
            if not value > 0:
                raise ValueError(f"{name}: expected a positive number, received {value}")
        if not MIN_SCALE < where_prior_side < 1.0:
            raise ValueError(f"where_prior_side: expected a glimpse side in ({MIN_SCALE}, 1) canvas widths, "
                             f"received {where_prior_side}")
        if variant not in objectives.VARIANTS:
            raise ValueError(f"variant: expected one of {objectives.VARIANTS}, received {variant!r}")
        height, width, channels = self.data_shape
        if glimpse_size > max(height, width):
            raise ValueError(f"glimpse_size: expected at most the canvas side {max(height, width)}, "
                             f"received {glimpse_size}")
        self._config = dict(
            input_shape=self.data_shape, num_classes=self.num_classes, max_digits=int(max_digits),
            glimpse_size=int(glimpse_size), what_dim=int(what_dim), encoder_units=int(encoder_units),
            lstm_units=int(lstm_units), what_units=int(what_units),
            canvas_filters=tuple(int(f) for f in canvas_filters), alpha=float(alpha),
            presence_prior=float(presence_prior), learn_presence_prior=bool(learn_presence_prior),
            where_prior_scale=float(where_prior_scale), where_prior_side=float(where_prior_side),
            where_prior_side_scale=float(where_prior_side_scale),
            num_samples=int(num_samples), variant=variant)
        self.max_digits, self.glimpse_size, self.what_dim = int(max_digits), int(glimpse_size), int(what_dim)
        G, D = self.glimpse_size, self.what_dim
        if canvas_filters:
            self.canvas_encoder = networks.conv_encoder(
                (height, width, 2 * channels), int(encoder_units), filters=self._config["canvas_filters"],
                kernel_size=3, strides=2, dense_units=int(encoder_units), activation="relu",
                name="canvas_encoder")
        else:
            self.canvas_encoder = networks.mlp([(height, width, 2 * channels)], int(encoder_units),
                                               hidden_units=(int(encoder_units),), activation="relu",
                                               name="canvas_encoder")
        self.lstm = keras.layers.LSTMCell(int(lstm_units), name="lstm")
        self.lstm.build((None, int(encoder_units) + 3 + D))
        self.presence_head = keras.layers.Dense(1, name="presence_head")
        self.presence_head.build((None, int(lstm_units)))
        # Glimpses start near the middle at about the digits' size (s = 0.48), with a small
        # spread (0.1): a wide initial q(z_where) writes digits anywhere and its noise
        # swamps the reconstruction gradient to where they belong.
        start_scale = math.log((0.48 - MIN_SCALE) / (1.0 - 0.48))
        raw_spread = math.log(math.expm1(0.1))
        self.where_head = keras.layers.Dense(
            6, kernel_initializer=keras.initializers.VarianceScaling(0.1),
            bias_initializer=keras.initializers.Constant([start_scale, 0.0, 0.0] + [raw_spread] * 3),
            name="where_head")
        self.where_head.build((None, int(lstm_units)))
        self.what_encoder = networks.mlp([(G, G, channels)], 2 * D, hidden_units=(int(what_units),),
                                         activation="relu", name="what_encoder")
        self.glimpse_decoder = networks.mlp([(D,)], G * G * channels, hidden_units=(int(what_units),),
                                            activation="relu", name="glimpse_decoder")
        self.likelihood = distributions.Bernoulli(self.data_shape, name="likelihood")
        prior_logit = math.log(presence_prior) - math.log1p(-presence_prior)
        self.presence_prior_logits = self.add_weight(
            name="presence_prior_logits", shape=(self.max_digits,),
            initializer=keras.initializers.Constant(prior_logit), trainable=bool(learn_presence_prior))

    def get_config(self):
        return dict(self._config)

    # --- the pieces of the model -------------------------------------------------------

    def render_digit(self, what, where_raw, training=False):
        """One digit per row on an empty canvas: ``what`` [rows, what_dim], ``where_raw`` [rows, 3]
        (unconstrained) -> ``[rows, H, W, C]`` in [0, 1]."""
        G, (height, width, channels) = self.glimpse_size, self.data_shape
        logits = tf.cast(self.glimpse_decoder(what, training=training), tf.float32)
        glimpse = tf.reshape(tf.sigmoid(logits), [-1, G, G, channels])
        return spatial.write_glimpse(glimpse, where_from_raw(where_raw), (height, width))

    def _normal(self, params):
        """``[rows, 2 n]`` (loc, raw scale) -> a diagonal Normal over ``[rows, n]``."""
        loc, raw_scale = tf.split(tf.cast(params, tf.float32), 2, axis=-1)
        return tfd.Independent(tfd.Normal(loc, tf.nn.softplus(raw_scale) + 1e-4), 1)

    def recognise(self, x, draw, training=False):
        """The recurrent recognition model over the K steps.

        Args:
          x: ``[rows, H, W, C]`` canvases.
          draw: ``draw(name, distribution) -> value``: ``q.variable`` to sample into a
            trace, or the distribution's mean for a deterministic reading.

        Returns:
          dict: ``presence_logits`` [rows, K] (step t present given 0..t-1 present),
          ``where`` [rows, K, 3] unconstrained values, ``what`` [rows, K, what_dim], and
          ``digits`` [rows, K, H, W, C], each step's digit as written (every step assumed
          present; the count decides which ones the canvas holds).
        """
        x = tf.cast(x, tf.float32)
        rows = tf.shape(x)[0]
        units = self.lstm.units
        state = [tf.zeros([rows, units]), tf.zeros([rows, units])]
        written = tf.zeros_like(x)
        where_raw = tf.zeros([rows, 3])
        what = tf.zeros([rows, self.what_dim])
        out = {"presence_logits": [], "where": [], "what": [], "digits": []}
        # Step t is only ever used when steps 0..t-1 are present, so it reads the residual
        # of all of them: the recurrence does not branch on the count.
        for t in range(self.max_digits):
            features = self.canvas_encoder(tf.concat([x, x - written], axis=-1), training=training)
            inputs = tf.concat([tf.cast(features, tf.float32), where_raw, what], axis=-1)
            h, state = self.lstm(inputs, state, training=training)
            h = tf.cast(h, tf.float32)
            out["presence_logits"].append(tf.cast(self.presence_head(h), tf.float32)[:, 0])
            where_raw = draw(f"where_{t}", self._normal(self.where_head(h)))
            glimpse = spatial.read_glimpse(x, where_from_raw(where_raw), self.glimpse_size)
            what = draw(f"what_{t}", self._normal(self.what_encoder(glimpse, training=training)))
            digit = self.render_digit(what, where_raw, training)
            written = written + digit
            for key, value in (("where", where_raw), ("what", what), ("digits", digit)):
                out[key].append(value)
        out["presence_logits"] = tf.stack(out["presence_logits"], axis=1)
        for key in ("where", "what", "digits"):
            out[key] = tf.stack(out[key], axis=1)
        return out

    def prior_count_logits(self, rows):
        """log p(count) ``[rows, K + 1]`` from the per-step prior continuation logits."""
        logits = tf.cast(tf.convert_to_tensor(self.presence_prior_logits), tf.float32)
        return count_log_probs(tf.tile(logits[None, :], [rows, 1]))

    def canvas_distribution(self, digit_sum):
        """p(x | ...) from the sum of the present written digits ``[rows, H, W, C]``."""
        probs = PIXEL_EPS + (1.0 - 2.0 * PIXEL_EPS) * tf.minimum(digit_sum, 1.0)
        return self.likelihood(tf.math.log(probs) - tf.math.log1p(-probs))

    # --- the graph --------------------------------------------------------------------

    def _copies(self):
        return self.max_digits + 1

    def encode_graph(self, q, x, training=False):
        """The steps' z_where, z_what, then q(count | x, z) from the per-step presence logits.

        ``x`` is laid out as the objective lays out an enumerated batch: K + 1 copies of
        the same ``[S * batch, ...]`` block, copy k holding count k.  The recognition runs
        once, on the first block, and its draws are shared by the K + 1 copies (module
        docstring: one z, every count summed out under q(count | x, z)).
        """
        copies = self._copies()
        block = tf.shape(x)[0] // copies
        drawn = []

        def draw(name, distribution):
            value = distribution.sample()  # reparameterised (Normal)
            drawn.append((name, distribution.distribution, value))
            return value

        out = self.recognise(x[:block], draw, training)
        tile = lambda t: tf.tile(t, [copies] + [1] * (t.shape.rank - 1))
        for name, normal, value in drawn:
            q.variable(name, tfd.Independent(tfd.Normal(tile(normal.loc), tile(normal.scale)), 1), sample=tile(value))
        q.discrete("count", tile(count_log_probs(out["presence_logits"])))

    def _step_prior(self, p, name, present, mean, stddev):
        """p(z_t | count): ``N(mean, diag(stddev)^2)`` (lists of floats) where step t is present;
        where it is absent, the recognition density of z_t itself (module docstring), so its
        log p - log q is 0."""
        rows = tf.shape(present)[0]
        loc = tf.tile(tf.constant([mean], tf.float32), [rows, 1])
        stddev = tf.tile(tf.constant([stddev], tf.float32), [rows, 1])
        if p.conditioned_on is not None and name in p.conditioned_on:
            q_normal = p.conditioned_on.records[name].distribution.distribution
            on = present[:, None] > 0.5
            loc = tf.where(on, loc, q_normal.loc)
            stddev = tf.where(on, stddev, q_normal.scale)
        return tfd.Independent(tfd.Normal(loc, stddev), 1)

    def decode_graph(self, p, x, training=False):
        """p(count), then per step p(z_where_t | count), p(z_what_t | count), and p(x | ...)."""
        rows = tf.shape(x)[0]
        K = self.max_digits
        present = presence_from_count(p.discrete("count", self.prior_count_logits(rows)))
        where, what = [], []
        options = self._config
        side = options["where_prior_side"]
        where_mean = [math.log((side - MIN_SCALE) / (1.0 - side)), 0.0, 0.0]  # raw_from_where's, in float64
        where_stddev = [options["where_prior_side_scale"]] + [options["where_prior_scale"]] * 2
        for t in range(K):
            where.append(p.variable(f"where_{t}", self._step_prior(p, f"where_{t}", present[:, t], where_mean,
                                                                   where_stddev)))
            what.append(p.variable(f"what_{t}", self._step_prior(p, f"what_{t}", present[:, t],
                                                                 [0.0] * self.what_dim, [1.0] * self.what_dim)))
        where, what = tf.stack(where, axis=1), tf.stack(what, axis=1)  # [rows, K, ...]
        # Conditioned on encode_graph, the K + 1 copies hold the same z: the digits are
        # drawn once, on the first block, and only their presence differs by copy.
        drawn = rows // self._copies() if p.conditioned_on is not None else rows
        digits = self.render_digit(tf.reshape(what[:drawn], [-1, self.what_dim]),
                                   tf.reshape(where[:drawn], [-1, 3]), training)
        digits = tf.reshape(digits, tf.concat([[drawn, K], tf.shape(digits)[1:]], axis=0))
        digits = tf.tile(digits, [rows // drawn, 1, 1, 1, 1])
        p.observe("x", self.canvas_distribution(tf.einsum("rk,rkhwc->rhwc", present, digits)), x)

    def _check_counts(self, counts, mask):
        """ValueError (eager) or an in-graph assertion: observed counts must be in 0..K."""
        counts = tf.cast(counts, tf.int32)
        mask = tf.cast(mask, tf.bool)
        if tf.executing_eagerly():
            observed = counts.numpy()[mask.numpy()]
            multi_digit_data.check_counts(observed, self.max_digits, name="count labels (y)")
            return counts
        outside = tf.logical_and(mask, tf.logical_or(counts < 0, counts > self.max_digits))
        check = tf.debugging.Assert(tf.logical_not(tf.reduce_any(outside)), [
            f"count labels (y) must be in 0..{self.max_digits} (max_digits) where observed; received",
            tf.boolean_mask(counts, outside)])
        with tf.control_dependencies([check]):
            return tf.identity(counts)

    def bound_terms(self, batch, training=False):
        """``objectives.partially_supervised_bound`` for a batch dict (module docstring)."""
        x = as_input(batch["x"], self.data_shape, "x")
        mask = tf.convert_to_tensor(batch["y_mask"])
        if mask.dtype != tf.bool:
            raise ValueError(f"y_mask: expected a bool mask [batch], received {mask.dtype.name}")
        counts = self._check_counts(batch["y"], mask)
        # Hidden counts may hold anything; the trace reads them only where observed.
        counts = tf.where(mask, counts, 0)
        options = self._config
        return objectives.partially_supervised_bound(
            lambda q, rows: self.encode_graph(q, rows, training), lambda p, rows: self.decode_graph(p, rows, training),
            x, supervision={"count": (counts, mask)}, num_samples=options["num_samples"],
            alpha=options["alpha"], variant=options["variant"], enumerate=("count", self.max_digits + 1))

    def compute_losses(self, batch, training=False):
        result = self.bound_terms(batch, training)
        batch_size = tf.shape(batch["x"])[0]
        # Copy 0 of the batch: its q(count | x, z) is one draw of z's (the others differ only by z).
        probabilities = tf.nn.softmax(result["q"].records["count"].distribution.logits_parameter()[:batch_size])
        mean_count = tf.reduce_sum(probabilities * tf.range(self.max_digits + 1, dtype=tf.float32), axis=-1)
        losses = {
            "loss": -tf.reduce_mean(result["bound"]),
            "reconstruction": -tf.reduce_mean(result["log_likelihood"]),
            "classification": -objectives.masked_mean(result["classification"], result["supervised"]),
            "mean_count": tf.reduce_mean(mean_count),
        }
        return losses, probabilities

    # --- serving ------------------------------------------------------------------------

    def _read(self, images):
        """The recognition model at q's means (no sampling): deterministic answers for serving."""
        images = as_input(images, self.data_shape)
        out = self.recognise(images, lambda name, distribution: distribution.mean())
        out["count_probabilities"] = tf.exp(count_log_probs(out["presence_logits"]))
        return out

    def count(self, images):
        """``images`` [batch, H, W, C] -> ``probabilities`` [batch, K + 1] of the counts 0..K
        (q(count | x) with every z at its mean) and ``count`` int64 [batch], the likeliest."""
        probabilities = self._read(images)["count_probabilities"]
        return {"probabilities": probabilities, "count": tf.argmax(probabilities, axis=-1)}

    def classify(self, images):
        """As ``count``, under the names of the shared interface (``probabilities``, ``class``)."""
        counted = self.count(images)
        return {"probabilities": counted["probabilities"], "class": counted["count"]}

    def decompose(self, images):
        """``images`` [batch, H, W, C] -> the scene, step by step, at q's means.

        Returns:
          dict: ``count_probabilities`` [batch, K + 1]; ``presence`` [batch, K], the
          probability that step t is present, P(count > t); ``where`` [batch, K, 3]
          ``(s, x, y)`` (``tfssvae.spatial``: side in canvas widths, centre in [-1, 1]);
          ``boxes`` [batch, K, 4] ``(y_min, x_min, y_max, x_max)`` in [0, 1] canvas units;
          ``what`` [batch, K, what_dim]; ``digits`` [batch, K, H, W, C], each step's digit
          as written on an empty canvas (not weighted by its presence).
        """
        return self._scene(self._read(images))

    def reconstruct(self, images):
        """``images`` [batch, H, W, C] -> ``reconstruction``: the digits of the likeliest count,
        summed and clipped to [0, 1] as the data compose them (at q's means)."""
        return self._reconstruction(self._read(images))

    def decompose_and_reconstruct(self, images):
        """``decompose`` and ``reconstruct`` from one reading of ``images``: the scene dict
        with ``reconstruction`` added (the evaluation and the figure need both)."""
        out = self._read(images)
        return {**self._scene(out), "reconstruction": self._reconstruction(out)["reconstruction"]}

    def _scene(self, out):
        """``decompose``'s dict from a ``_read``."""
        where = where_from_raw(out["where"])
        return {"count_probabilities": out["count_probabilities"],
                "presence": presence_from_count(out["count_probabilities"]),
                "where": where, "boxes": spatial.where_to_boxes(where), "what": out["what"],
                "digits": out["digits"]}

    def _reconstruction(self, out):
        """``reconstruct``'s dict from a ``_read``."""
        count = tf.argmax(out["count_probabilities"], axis=-1, output_type=tf.int32)
        present = presence_from_count(tf.one_hot(count, self.max_digits + 1))
        digits = tf.einsum("bk,bkhwc->bhwc", present, out["digits"])
        return {"reconstruction": tf.minimum(digits, 1.0), "count": tf.cast(count, tf.int64)}

    def encode(self, images):
        """The shared interface's code of an image: ``decompose``."""
        return self.decompose(images)

    def generate(self, counts, z_where, z_what):
        """Canvases from ``counts`` int [batch] in 0..K, ``z_where`` [batch, K, 3] (unconstrained,
        p(z_where) as in the module docstring) and ``z_what`` [batch, K, what_dim]; steps from the
        count on are left out.

        Returns:
          dict: ``images`` [batch, H, W, C], the canvas mean min(1, sum of present digits),
          and ``digits`` [batch, K, H, W, C].
        """
        counts = tf.convert_to_tensor(counts)
        if counts.dtype.is_floating or counts.dtype == tf.bool or counts.shape.rank != 1:
            raise ValueError(f"counts: expected integer counts [batch], received {counts.dtype.name} {counts.shape}")
        if tf.executing_eagerly():
            multi_digit_data.check_counts(counts.numpy(), self.max_digits, name="counts")
        K = self.max_digits
        z_where = as_input(z_where, (K, 3), "z_where")
        z_what = as_input(z_what, (K, self.what_dim), "z_what")
        if tf.executing_eagerly() and not counts.shape[0] == z_where.shape[0] == z_what.shape[0]:
            raise ValueError(f"counts, z_where, z_what: expected one batch size, received {counts.shape[0]}, "
                             f"{z_where.shape[0]} and {z_what.shape[0]}")
        rows = tf.shape(z_what)[0]
        digits = self.render_digit(tf.reshape(z_what, [-1, self.what_dim]), tf.reshape(z_where, [-1, 3]))
        digits = tf.reshape(digits, tf.concat([[rows, K], tf.shape(digits)[1:]], axis=0))
        present = presence_from_count(tf.one_hot(tf.cast(counts, tf.int32), K + 1))
        return {"images": tf.minimum(tf.einsum("bk,bkhwc->bhwc", present, digits), 1.0), "digits": digits}

    def generate_signature(self):
        K = self.max_digits
        return [tf.TensorSpec((None,), tf.int32, name="counts"),
                tf.TensorSpec((None, K, 3), tf.float32, name="z_where"),
                tf.TensorSpec((None, K, self.what_dim), tf.float32, name="z_what")]

    def serving_bounds(self):
        return {**super().serving_bounds(), "counts": (0, self.max_digits + 1)}

    def serving_functions(self):
        """``count`` (also ``serving_default``), ``decompose``, ``reconstruct`` and ``generate``;
        ``classify`` is left out of the export: it is ``count`` under other output names."""
        images = [self.input_signature()]
        return {
            "count": (self.count, images),
            "decompose": (self.decompose, images),
            "reconstruct": (self.reconstruct, images),
            "generate": (self.generate, self.generate_signature()),
            "serving_default": (self.count, images),
        }


# ------------------------------------------------------------------------- evaluation

def box_iou(a, b):
    """Intersection over union of boxes ``[..., 4]`` ``(y_min, x_min, y_max, x_max)`` (numpy,
    broadcasting ``a`` against ``b``); 0 where both boxes are empty."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape[-1:] != (4,) or b.shape[-1:] != (4,):
        raise ValueError(f"boxes: expected [..., 4] (y_min, x_min, y_max, x_max), received {a.shape} and {b.shape}")
    low = np.maximum(a[..., :2], b[..., :2])
    high = np.minimum(a[..., 2:], b[..., 2:])
    intersection = np.prod(np.clip(high - low, 0.0, None), axis=-1)
    area = lambda box: np.prod(np.clip(box[..., 2:] - box[..., :2], 0.0, None), axis=-1)
    union = area(a) + area(b) - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)


def matched_iou(true_boxes, inferred_boxes, counts):
    """IoU of each true box with its inferred box under the best one-to-one matching.

    The matching maximises the summed IoU over the present digits of each canvas (the
    assignment problem ``scipy.optimize.linear_sum_assignment`` solves), here by trying
    every permutation of the K slots at once for all canvases: K! permutations (6 for
    K = 3) of a [n, K, K] IoU matrix, vectorised over canvases.  Absent slots (from
    ``counts`` on, on both sides) have IoU 0 with everything, so the best permutation of
    all K slots matches the present digits as well as the best matching among them alone.

    Args:
      true_boxes, inferred_boxes: ``[n, K, 4]``, present digits in slots ``0..count-1``.
      counts: int ``[n]`` in 0..K, the number of present digits on both sides.

    Returns:
      ``(iou, present)``: float ``[n, K]``, the IoU of true slot k with its match, and
      bool ``[n, K]``, which slots are present (IoU of absent slots is 0).
    """
    true_boxes, inferred_boxes = np.asarray(true_boxes, np.float64), np.asarray(inferred_boxes, np.float64)
    n, K = true_boxes.shape[:2]
    if true_boxes.shape != (n, K, 4) or inferred_boxes.shape != (n, K, 4):
        raise ValueError(f"true_boxes, inferred_boxes: expected [n, K, 4] each, received {true_boxes.shape} and "
                         f"{inferred_boxes.shape}")
    if K > 8:
        raise ValueError(f"matched_iou tries all K! matchings; K = {K} is too many (at most 8)")
    counts = multi_digit_data.check_counts(counts, K, name="counts")
    if counts.shape != (n,):
        raise ValueError(f"counts: expected shape ({n},), received {counts.shape}")
    present = np.arange(K)[None, :] < counts[:, None]
    iou = box_iou(true_boxes[:, :, None, :], inferred_boxes[:, None, :, :])  # [n, K true, K inferred]
    iou = iou * (present[:, :, None] & present[:, None, :])
    permutations = np.array(list(itertools.permutations(range(K))))  # [P, K]: true k -> inferred perm[k]
    per_slot = iou[:, np.arange(K)[None, :], permutations]  # [n, P, K]
    best = np.argmax(per_slot.sum(-1), axis=1)
    return per_slot[np.arange(n), best], present


def evaluate_canvases(model, canvases, counts, boxes, batch_size=500):
    """The multi-digit figures of a model on labelled canvases.

    Args:
      model: a ``MultiDigitModel``.
      canvases: ``[n, H, W, C]`` in [0, 1]; counts: int ``[n]`` in 0..K; boxes: ``[n, K, 4]``
        true boxes ``(y_min, x_min, y_max, x_max)``, slots ``0..count-1`` present.

    Returns:
      dict: ``count_accuracy`` (the likeliest count under q, z at its means, is the true
      one); ``reconstruction_mse``, the mean squared error per pixel of ``reconstruct``
      (the digits of the likeliest count); ``mean_iou``, the mean IoU of inferred with true
      boxes over the digits of correctly counted canvases, boxes matched by
      ``matched_iou`` (None when no correctly counted canvas holds a digit); and
      ``iou_boxes``, the number of boxes that mean is over.
    """
    canvases = np.asarray(canvases, np.float32)
    n, K = len(canvases), model.max_digits
    counts = multi_digit_data.check_counts(counts, K, name="counts")
    boxes = np.asarray(boxes, np.float32)
    if counts.shape != (n,) or boxes.shape != (n, K, 4):
        raise ValueError(f"counts, boxes: expected shapes ({n},) and ({n}, {K}, 4) for {n} canvases, received "
                         f"{counts.shape} and {boxes.shape}")
    read = getattr(model, "_evaluate_function", None)
    if read is None:
        def read(x):
            scene = model.decompose_and_reconstruct(x)
            return scene["count_probabilities"], scene["boxes"], scene["reconstruction"]
        read = tf.function(read, input_signature=[model.input_signature()])
        model._evaluate_function = read
    predicted, inferred, squared = [], [], []
    for start in range(0, n, batch_size):
        chunk = canvases[start:start + batch_size]
        probabilities, chunk_boxes, reconstruction = read(tf.constant(chunk))
        predicted.append(np.argmax(probabilities.numpy(), axis=-1))
        inferred.append(chunk_boxes.numpy())
        squared.append(np.mean((reconstruction.numpy() - chunk) ** 2, axis=(1, 2, 3)))
    predicted, inferred = np.concatenate(predicted), np.concatenate(inferred)
    right = predicted == counts
    iou, present = matched_iou(boxes[right], inferred[right], counts[right])
    return {"count_accuracy": float(np.mean(right)),
            "reconstruction_mse": float(np.mean(np.concatenate(squared))),
            "mean_iou": float(iou[present].mean()) if present.any() else None,
            "iou_boxes": int(present.sum())}


def write_decomposition(model, canvases, path, scale=4):
    """Writes ``figures.decomposition`` of ``canvases`` ``[n, H, W, C]`` under ``model`` (a
    ``MultiDigitModel``; ``decompose`` and ``reconstruct``, at q's means) to ``path``; returns ``path``."""
    canvases = np.asarray(canvases, np.float32)
    scene = model.decompose_and_reconstruct(tf.constant(canvases))
    return figures.decomposition(path, canvases, scene["count_probabilities"].numpy(), scene["boxes"].numpy(),
                                 scene["digits"].numpy(), scene["reconstruction"].numpy(), scale=scale)


__all__ = ["MultiDigitModel", "where_from_raw", "raw_from_where", "count_log_probs", "presence_from_count",
           "box_iou", "matched_iou", "evaluate_canvases", "write_decomposition"]
