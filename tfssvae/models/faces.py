"""Intrinsic faces (Siddharth et al. 2017): identity and lighting under partial supervision.

The model, declared with ``tfssvae.graph`` and trained with the one objective
(``objectives.partially_supervised_bound``)::

    recognition  q(identity | x)  q(light | x)  q(style | x, identity, light)
    generation   p(identity) p(light) p(style) p(x | identity, light, style)

* ``identity``: one-hot over the ``num_classes`` training identities; p uniform.  Latent
  rows are relaxed (Concrete, ``discrete="relax"``, the default: one decoder pass a row)
  or summed out exactly (``discrete="enumerate"``: K decoder passes an example).
* ``light``: the lighting direction as **(azimuth, elevation) in radians**, a diagonal
  Normal in q (mean and scale from the image) and ``N(0, light_prior_scale^2 I)`` in p.
  Why this chart: it is a real TFP density on the two degrees of freedom of a direction
  (a Normal on the 3-vector would score the length, which a direction does not have;
  ``tfd.VonMisesFisher`` has no closed-form normaliser on the half-sphere it would be
  restricted to), the Yale B design is a grid in exactly these angles, and a small step
  in either is a small angle everywhere the design has lights (|elevation| <= 65 degrees
  but for the one overhead light).  The vector is
  ``(cos E sin A, sin E, |cos E cos A|)``: every (A, E) in R^2 gives a unit vector, and
  the absolute value folds the back hemisphere onto the front exactly as the data fold
  Yale B's lights behind the image plane (``faces.mirror_to_front``), so a sample with
  |A| > 90 degrees still renders a valid light.  Observed lights are converted back with
  ``A = atan2(x, z)`` in [-90, 90] degrees and ``E = asin(y)`` (A = 0 for the overhead light).
* ``style``: a free ``style_dim``-dimensional Normal; p = N(0, I).

Decoder ``"intrinsic"`` (the paper's): a transposed-conv network maps (identity, style)
to per-pixel surface normals (3 channels normalised to unit length, the z channel
through a softplus so every normal faces the camera; with ``mean_shape="dome"``, the
config's, the x and y channels are offsets from the normals of a head-sized ellipsoid)
and (identity, style 0) to an
albedo (sigmoid; the identity's own, so that no image's shading can hide in it), and the
image mean is rendered from them and the light by the Lambertian formula
``albedo * max(0, normal . light)`` (``lambertian``, the TF twin of ``faces.shade``), so
the lighting variable can only act as a light.  Decoder ``"plain"`` (the baseline): the
same network taking (identity, light 3-vector, style) and giving the image mean through
a sigmoid.

Likelihood: a Normal per pixel around the mean with a learned per-pixel scale
(``distributions.LearnedVarianceNormal``), for grey levels that include exact zeros
(attached shadows), where a Bernoulli's logits would be infinite.

Batches are dicts ``{"x": [batch, 64, 64, 1], "identity": int [batch],
"identity_mask": bool [batch], "light": [batch, 3] unit vectors, "light_mask": bool
[batch]}``; identity and light are supervised independently, per example.
"""
import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfssvae import distributions, networks, objectives
from tfssvae.data import faces as faces_data
from tfssvae.models.base import GenerativeModel, as_input

tfd = tfp.distributions

DECODERS = ("intrinsic", "plain")
DISCRETE = ("relax", "enumerate")
MEAN_SHAPES = ("flat", "dome")
#: The ``"dome"`` mean shape: an ellipsoid of half-width 0.76, half-height 0.9 and depth 0.65
#: (image half-widths), the middle of the renderer's head ranges; no face features.
DOME = dict(half_width=0.76, half_height=0.9, depth=0.65)


# --------------------------------------------------------------------- lights and shading

def angles_to_light(angles):
    """(azimuth, elevation) radians ``[..., 2]`` -> unit lights ``[..., 3]`` with z >= 0.

    ``(cos E sin A, sin E, |cos E cos A|)``: the back hemisphere folded onto the front
    (``faces.mirror_to_front``), so every pair of angles is a light the renderer accepts.
    """
    azimuth, elevation = angles[..., 0], angles[..., 1]
    cos_e = tf.cos(elevation)
    return tf.stack([cos_e * tf.sin(azimuth), tf.sin(elevation), tf.abs(cos_e * tf.cos(azimuth))], axis=-1)


def light_to_angles(lights):
    """Unit lights ``[..., 3]`` (z >= 0) -> (azimuth, elevation) radians ``[..., 2]``.

    Azimuth ``atan2(x, z)`` in [-pi/2, pi/2] (z is clipped at 0: float32 rounding leaves
    horizon lights a few 1e-8 below it), elevation ``asin(y)``; azimuth 0 for a light
    straight up or down, whose azimuth is undefined (as ``faces.vector_to_azel``).
    """
    lights = tf.convert_to_tensor(lights, tf.float32)
    x, y, z = tf.unstack(lights, axis=-1)
    z = tf.maximum(z, 0.0)
    vertical = tf.sqrt(x * x + z * z) < 1e-6
    azimuth = tf.where(vertical, 0.0, tf.atan2(x, z))
    return tf.stack([azimuth, tf.asin(tf.clip_by_value(y, -1.0, 1.0))], axis=-1)


def lambertian(normals, albedo, lights):
    """``albedo * max(0, normal . light)``, as ``faces.shade`` in TF ops.

    Args:
      normals: ``[batch, height, width, 3]`` unit normals.
      albedo: ``[batch, height, width, 1]``.
      lights: ``[batch, 3]`` unit vectors.

    Returns:
      ``[batch, height, width, 1]`` image means.
    """
    cosine = tf.einsum("bhwc,bc->bhw", normals, lights)[..., None]
    return albedo * tf.nn.relu(cosine)


def angle_degrees(lights, estimates):
    """Angles in degrees between unit vectors ``[batch, 3]`` and estimates ``[batch, 3]``: ``[batch]``."""
    cosine = np.sum(np.asarray(lights, np.float64) * np.asarray(estimates, np.float64), axis=-1)
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


def check_lights(lights, name="lights", num_examples=None):
    """``lights`` as float32 ``[batch, 3]`` unit vectors on the upper hemisphere.

    Eagerly: ``faces.check_lights`` (a ValueError naming ``name``; ``num_examples``, if
    given, is the batch size the lights must have).  Inside a graph (a
    SavedModel signature): in-graph asserts with the same tolerances, failing with an
    ``InvalidArgumentError`` that names ``name``.
    """
    lights = as_input(lights, (3,), name)
    if tf.executing_eagerly():
        if num_examples is not None:
            num_examples = int(num_examples)
        return tf.constant(faces_data.check_lights(lights.numpy(), name, num_examples=num_examples))
    length = tf.norm(lights, axis=-1)
    unit = tf.debugging.Assert(
        tf.reduce_all(tf.abs(length - 1.0) <= faces_data.UNIT_TOLERANCE),
        [f"{name}: expected unit vectors (length 1 within {faces_data.UNIT_TOLERANCE}), received lengths from",
         tf.reduce_min(length), "to", tf.reduce_max(length)])
    with tf.control_dependencies([unit]):
        lowest = tf.reduce_min(lights[:, 2])
        above = tf.debugging.Assert(
            lowest >= -faces_data.HORIZON_TOLERANCE,
            [f"{name}: expected lights on the upper hemisphere z >= 0 (toward the camera), received a light "
             f"below the horizon with z =", lowest])
    with tf.control_dependencies([above]):
        return tf.identity(lights)


def dome_slopes(shape):
    """The ``"dome"`` mean shape's normals as slopes ``(n_x / n_z, n_y / n_z)``, float32
    ``[height, width, 2]``: an ellipsoid (``DOME``) centred in the image, flat outside it,
    in the renderer's conventions (``faces.surface_normals``: x right, y up)."""
    height, width = shape
    if height != width:
        raise ValueError(f"mean_shape: the dome needs square images, received {height}x{width}")
    u = (np.arange(width) + 0.5) / width * 2.0 - 1.0
    v = -((np.arange(height) + 0.5) / height * 2.0 - 1.0)
    inside = 1.0 - (u[None, :] / DOME["half_width"]) ** 2 - (v[:, None] / DOME["half_height"]) ** 2
    dome = DOME["depth"] * np.sqrt(np.clip(inside, 0.0, None))
    normals = faces_data.surface_normals(dome[None])[0]
    return (normals[..., :2] / normals[..., 2:3]).astype(np.float32)


# ------------------------------------------------------------------------------- the model

class FacesModel(GenerativeModel):
    """Identity, lighting and style of grey face images, with an intrinsic (or plain) decoder.

    Args:
      input_shape: ``(64, 64, 1)`` (height and width divisible by
        ``2 ** (len(decoder_filters) + 1)``).
      num_classes: K, the training identities (38 in the design).
      style_dim: size of the style latent.
      decoder: ``"intrinsic"`` (normals and albedo, Lambertian rendering) or ``"plain"``.
      filters: conv filters of the three encoders (identity, light and style).
      dense_units: the encoders' dense layer.
      decoder_filters: hidden transposed-conv filters of the decoder.
      alpha: weight of the supervised term log q(identity, light | x) beyond the bound
        (the objective's ``alpha``).
      light_prior_scale: standard deviation (radians) of p(azimuth) and p(elevation).
      discrete: ``"relax"`` or ``"enumerate"`` for latent identities.
      temperature: Concrete temperature of relaxed identities.
      num_samples: samples per example in the objective.
      variant: ``"weighted"`` or ``"iw"`` (``objectives.VARIANTS``).
      initial_pixel_scale: the likelihood's per-pixel scale at initialisation.
      mean_shape: what the intrinsic decoder's normals are an offset from: ``"flat"`` (the
        network's normals as they are: facing the camera at initialisation) or ``"dome"``
        (the normals of a head-sized ellipsoid, ``DOME``).  Flat normals see only the
        light's z component, which is the same for a light from the left or the right, so
        the light gets no gradient that tells the two apart until the normals have learned
        a shape; a dome shades a left light differently from a right one from the first step.
      supervised_warmup: training steps (the optimizer's iterations) at the start whose
        loss is the supervised term alone, ``-(1 + alpha) log q(identity, light | x)`` of
        the examples with an observed variable: the encoders learn the observed lights
        and identities before the decoder's gradient reaches them (0: none).
      identity_marginal_weight: weight of KL(q_batch(identity) || uniform) added to the
        loss, with q_batch the mean of q(identity | x) over the batch.  The bound holds this
        term once, inside its per-example KL (Hoffman & Johnson's "ELBO surgery"), and it
        is what asks for every identity to be used; with few labels q left half the
        identities unused (RESULTS.md, issue 12).  0: the bound alone.
      dream_weight: weight of the sleep-phase term (``dream_loss``): after the supervised
        warm-up, q(identity, light | x) is also trained on images the decoder renders
        from the prior, ``-dream_weight * mean log q(identity, light | dream)``.  With few
        labels q must recognise an identity under lights it has no labelled image of; the
        decoder can show it every identity under every light (0: no dreams).
    """

    loss_names = ("loss", "reconstruction", "kl_style", "classification", "light_angle")

    def __init__(self, input_shape, num_classes, style_dim=4, decoder="intrinsic", filters=(16, 32, 32, 64),
                 dense_units=128, decoder_filters=(32, 32, 16), alpha=10.0, light_prior_scale=0.8,
                 discrete="relax", temperature=0.66, num_samples=1, variant="weighted", initial_pixel_scale=0.1,
                 supervised_warmup=0, mean_shape="flat", identity_marginal_weight=0.0, dream_weight=0.0,
                 **kwargs):
        super().__init__(input_shape, num_classes, **kwargs)
        if decoder not in DECODERS:
            raise ValueError(f"decoder: expected one of {DECODERS}, received {decoder!r}")
        if mean_shape not in MEAN_SHAPES:
            raise ValueError(f"mean_shape: expected one of {MEAN_SHAPES}, received {mean_shape!r}")
        if discrete not in DISCRETE:
            raise ValueError(f"discrete: expected one of {DISCRETE}, received {discrete!r}")
        if variant not in objectives.VARIANTS:
            raise ValueError(f"variant: expected one of {objectives.VARIANTS}, received {variant!r}")
        if int(style_dim) < 0:
            raise ValueError(f"style_dim: expected an integer >= 0 (0: no style), received {style_dim}")
        if int(num_samples) < 1:
            raise ValueError(f"num_samples: expected S >= 1, received {num_samples}")
        if not alpha >= 0:
            raise ValueError(f"alpha: expected a non-negative weight, received {alpha}")
        if not dream_weight >= 0:
            raise ValueError(f"dream_weight: expected a non-negative weight, received {dream_weight}")
        if not identity_marginal_weight >= 0:
            raise ValueError(f"identity_marginal_weight: expected a non-negative weight, received "
                             f"{identity_marginal_weight}")
        if not light_prior_scale > 0:
            raise ValueError(f"light_prior_scale: expected a positive scale (radians), received {light_prior_scale}")
        if len(self.data_shape) != 3:
            raise ValueError(f"input_shape: expected (height, width, channels), received {input_shape}")
        if isinstance(supervised_warmup, bool) or int(supervised_warmup) != supervised_warmup or supervised_warmup < 0:
            raise ValueError(f"supervised_warmup: expected a number of steps >= 0, received {supervised_warmup!r}")
        self._config = dict(
            input_shape=self.data_shape, num_classes=self.num_classes, style_dim=int(style_dim), decoder=decoder,
            filters=tuple(int(f) for f in filters), dense_units=int(dense_units),
            decoder_filters=tuple(int(f) for f in decoder_filters), alpha=float(alpha),
            light_prior_scale=float(light_prior_scale), discrete=discrete, temperature=float(temperature),
            num_samples=int(num_samples), variant=variant, initial_pixel_scale=float(initial_pixel_scale),
            supervised_warmup=int(supervised_warmup), mean_shape=mean_shape,
            identity_marginal_weight=float(identity_marginal_weight), dream_weight=float(dream_weight))
        self.style_dim, self.decoder = int(style_dim), decoder
        K, d = self.num_classes, self.style_dim
        conv = dict(filters=tuple(filters), dense_units=int(dense_units))
        # Identity logits and the light's (mean, raw scale) pairs from two networks: in one
        # shared network the light's log-density, whose gradient grows as its scale shrinks,
        # starved the identity (measured: 1.2 degrees but chance-level identities after 1,500
        # fully supervised steps).  The style from a third, which also reads the identity
        # and the light so that the style is what they leave unexplained.
        self.identity_encoder = networks.conv_encoder(self.data_shape, K, name="identity_encoder", **conv)
        self.light_encoder = networks.conv_encoder(
            self.data_shape, distributions.DiagonalNormal.params_size(2), name="light_encoder", **conv)
        self.light_posterior = distributions.DiagonalNormal(2, name="q_light")
        if d:
            self.style_encoder = networks.conv_encoder(
                self.data_shape, distributions.DiagonalNormal.params_size(d), extra_input_shapes=[(K,), (3,)],
                name="style_encoder", **conv)
            self.style_posterior = distributions.DiagonalNormal(d, name="q_style")
        if decoder == "intrinsic":
            # 4 maps a pixel: three for the normal, one for the albedo.
            self.decoder_network = networks.deconv_decoder(
                K + d, self.data_shape, params_per_pixel=4, filters=tuple(decoder_filters), name="decoder")
        else:
            self.decoder_network = networks.deconv_decoder(
                K + 3 + d, self.data_shape, params_per_pixel=1, filters=tuple(decoder_filters), name="decoder")
        # The mean shape's slopes (n_x / n_z, n_y / n_z) [H, W, 2]; zeros for "flat".
        self.mean_slopes = tf.zeros([*self.data_shape[:2], 2])
        if mean_shape == "dome":
            self.mean_slopes = tf.constant(dome_slopes(self.data_shape[:2]), tf.float32)
        self.likelihood = distributions.LearnedVarianceNormal(
            self.data_shape, initial_scale=float(initial_pixel_scale), name="likelihood")
        self.likelihood.build((None, *self.data_shape))

    def get_config(self):
        return dict(self._config)

    # --- the pieces of the model -------------------------------------------------------

    def recognise(self, x, training=False):
        """``x`` [batch, 64, 64, 1] -> identity logits [batch, K] and q(light | x) over [batch, 2] angles."""
        logits, light_parameters = self._encoder_outputs(x, training)
        return logits, self.light_posterior(light_parameters)

    def _encoder_outputs(self, x, training=False):
        """``x`` [batch, 64, 64, 1] -> identity logits [batch, K] and q(light | x)'s parameters [batch, 4]."""
        return (tf.cast(self.identity_encoder(x, training=training), tf.float32),
                self.light_encoder(x, training=training))

    def q_style(self, x, identity, light, training=False):
        """q(style | x, identity, light): ``identity`` [batch, K] (one-hot or relaxed), ``light`` [batch, 3]."""
        return self.style_posterior(self.style_encoder([x, identity, light], training=training))

    def render(self, identity, light, style, training=False):
        """The decoder: image means from ``identity`` [batch, K], ``light`` [batch, 3] unit vectors and
        ``style`` [batch, style_dim].

        Without a style (``style_dim=0``) the intrinsic decoder's normals and albedo are the
        identity's alone: one decoder pass over the K one-hot identities gives K templates,
        each an albedo-scaled normal map ``b = albedo * normal``, and a row's ``b`` is its
        identity weights times the templates' (exact for a one-hot identity; for a relaxed
        one, a mixture whose direction is the row's normal and whose length its albedo), so
        that the image ``max(0, b . light)`` is still the Lambertian formula.  Summing the
        identity out (``discrete="enumerate"``) then costs K decoder passes a batch, not K
        an example: the light enters only through the formula.

        Returns:
          dict: ``images`` [batch, 64, 64, 1]; for the intrinsic decoder also ``normals``
          [batch, 64, 64, 3] (unit, z > 0) and ``albedo`` [batch, 64, 64, 1] in (0, 1), with
          ``images == lambertian(normals, albedo, light)``.
        """
        identity = tf.cast(identity, tf.float32)
        light, style = tf.cast(light, tf.float32), tf.cast(style, tf.float32)
        if self.decoder == "plain":
            out = tf.cast(self.decoder_network(tf.concat([identity, light, style], -1), training=training), tf.float32)
            return {"images": tf.sigmoid(out)}
        if self.style_dim:
            out = tf.cast(self.decoder_network(tf.concat([identity, style], -1), training=training), tf.float32)
            # The albedo is the identity's alone: the decoder's albedo map at style 0 (a second
            # pass).  With the albedo read from (identity, style) the style learned each image's
            # shading and painted it into the albedo, leaving the normals flat, so the light
            # explained only brightness and relit faces had no shadows (10 % supervision, 3,000
            # steps); with it from the identity alone the normals came out close to the true
            # ones at the same budget and lighting error (RESULTS.md, issue 12).
            albedo_logits = tf.cast(self.decoder_network(tf.concat([identity, tf.zeros_like(style)], -1),
                                                         training=training), tf.float32)[..., 3:4]
        else:
            K = self.num_classes
            templates = tf.cast(self.decoder_network(tf.eye(K), training=training), tf.float32)  # [K, H, W, 4]
            maps = self._intrinsic_maps(templates, templates[..., 3:4])
            scaled = tf.reshape(tf.matmul(identity, tf.reshape(maps[0] * maps[1], [K, -1])),
                                tf.concat([tf.shape(identity)[:1], tf.shape(maps[0])[1:]], 0))  # b [rows, H, W, 3]
            albedo = tf.norm(scaled, axis=-1, keepdims=True)
            image = tf.nn.relu(tf.einsum("bhwc,bc->bhw", scaled, light))[..., None]
            return {"images": image, "normals": scaled / tf.maximum(albedo, 1e-12), "albedo": albedo}
        normals, albedo = self._intrinsic_maps(out, albedo_logits)
        return {"images": lambertian(normals, albedo, light), "normals": normals, "albedo": albedo}

    def _intrinsic_maps(self, out, albedo_logits):
        """The decoder's output ``[rows, H, W, 4]`` (its first 3 maps used) and the albedo's
        logits ``[rows, H, W, 1]`` -> unit normals ``[rows, H, W, 3]`` and albedo in (0, 1)."""
        # The floor keeps z (and so the norm) away from 0: every normal faces the camera.
        # The network's x and y are offsets from the mean shape's normal (its slopes times z).
        z = tf.nn.softplus(out[..., 2:3]) + 1e-3
        raw = tf.concat([out[..., :2] + self.mean_slopes * z, z], -1)
        return raw / tf.norm(raw, axis=-1, keepdims=True), tf.sigmoid(albedo_logits)

    def light_prior(self, rows):
        return tfd.Independent(tfd.Normal(tf.zeros([rows, 2]), self._config["light_prior_scale"]), 1)

    # --- the graph --------------------------------------------------------------------

    def encode_graph(self, q, x, training=False, encoder_outputs=None):
        """q(identity | x), q(light | x), then q(style | x, identity, light) (if ``style_dim``).

        ``encoder_outputs``: the identity and light encoders' outputs for ``x``'s rows, if
        already computed (``_encoder_outputs``); None: computed here.
        """
        logits, light_parameters = encoder_outputs or self._encoder_outputs(x, training)
        identity = q.discrete("identity", logits)
        angles = q.variable("light", self.light_posterior(light_parameters))
        if self.style_dim:
            q.variable("style", self.q_style(x, identity, angles_to_light(angles), training))

    def decode_graph(self, p, x, training=False):
        """p(identity) uniform, p(light) = N(0, light_prior_scale^2 I), p(style) = N(0, I), p(x | ...)."""
        rows = tf.shape(x)[0]
        identity = p.discrete("identity", tf.zeros([rows, self.num_classes]))
        angles = p.variable("light", self.light_prior(rows))
        style = tf.zeros([rows, 0])
        if self.style_dim:
            style = p.variable("style", tfd.Independent(tfd.Normal(tf.zeros([rows, self.style_dim]), 1.0), 1))
        mean = self.render(identity, angles_to_light(angles), style, training)["images"]
        p.observe("x", self.likelihood(mean), x)

    def bound_terms(self, batch, training=False):
        """``objectives.partially_supervised_bound`` for a batch dict (see the module docstring)."""
        x = as_input(batch["x"], self.data_shape, "x")
        supervision = {
            "identity": (tf.cast(batch["identity"], tf.int32), tf.cast(batch["identity_mask"], tf.bool)),
            "light": (light_to_angles(batch["light"]), tf.cast(batch["light_mask"], tf.bool)),
        }
        options = self._config
        # The identity and light encoders read each example once; the objective's copies of
        # the batch (samples, enumerated identities) share their outputs.
        outputs = self._encoder_outputs(x, training)

        def encode(q, rows):
            copies = tf.shape(rows)[0] // tf.shape(x)[0]
            self.encode_graph(q, rows, training, [objectives.tile_rows(t, copies) for t in outputs])

        return objectives.partially_supervised_bound(
            encode, lambda p, x: self.decode_graph(p, x, training), x,
            supervision=supervision, num_samples=options["num_samples"], alpha=options["alpha"],
            variant=options["variant"], temperature=options["temperature"],
            enumerate=("identity", self.num_classes) if options["discrete"] == "enumerate" else None)

    def compute_losses(self, batch, training=False):
        result = self.bound_terms(batch, training)
        batch_size = tf.shape(batch["x"])[0]
        q = result["q"]
        # The first copy of the batch: q's parameters are the same in every copy.
        logits = q.records["identity"].distribution.logits_parameter()[:batch_size]
        estimate = angles_to_light(q.records["light"].distribution.mean()[:batch_size])
        cosine = tf.reduce_sum(estimate * tf.cast(batch["light"], tf.float32), axis=-1)
        angle = tf.acos(tf.clip_by_value(cosine, -1.0, 1.0)) * (180.0 / math.pi)
        kl_style = tf.zeros([batch_size])
        if self.style_dim:
            style = q.records["style"]
            kl_style = tfd.kl_divergence(style.distribution, tfd.Independent(
                tfd.Normal(tf.zeros_like(style.value), 1.0), 1))
        loss = -tf.reduce_mean(result["bound"])
        if self._config["identity_marginal_weight"]:
            loss += self._config["identity_marginal_weight"] * marginal_kl(logits)
        warmup = self._config["supervised_warmup"]
        step = getattr(getattr(self, "optimizer", None), "iterations", None)
        if training and self._config["dream_weight"]:
            # The decoder is untrained during the warm-up: no dreams before it ends.
            dreams = self._config["dream_weight"] * self.dream_loss(batch_size)
            loss += dreams if step is None else tf.where(step >= warmup, dreams, 0.0)
        if training and warmup and step is not None:
            # classification is 0 where nothing is observed: the unsupervised examples drop out.
            supervised = -(1.0 + self._config["alpha"]) * tf.reduce_mean(result["classification"])
            loss = tf.where(step < warmup, supervised, loss)
        losses = {
            "loss": loss,
            "reconstruction": -tf.reduce_mean(result["log_likelihood"]),
            "kl_style": tf.reduce_mean(kl_style),
            "classification": -objectives.masked_mean(result["classification"], result["supervised"]),
            # Degrees between q's mean light and the observed one, where the light is observed.
            "light_angle": objectives.masked_mean(angle, batch["light_mask"]),
        }
        return losses, tf.nn.softmax(logits)

    def dream_loss(self, rows):
        """The sleep phase: ``-mean log q(identity, light | x)`` over ``rows`` dreams, a scalar.

        A dream draws an identity from p(identity), a light from p(light) and a style from
        p(style), renders the decoder's image and draws it from the likelihood; nothing of
        it carries a gradient to the decoder (only the encoders learn from dreams).
        """
        identities = tf.random.uniform([rows], 0, self.num_classes, tf.int32)
        angles = self.light_prior(rows).sample()
        style = tf.random.normal([rows, self.style_dim])
        mean = self.render(tf.one_hot(identities, self.num_classes), angles_to_light(angles), style, True)["images"]
        dreams = tf.stop_gradient(self.likelihood(mean).sample())
        logits, q_light = self.recognise(dreams, training=True)
        log_q = (-tf.nn.sparse_softmax_cross_entropy_with_logits(labels=identities, logits=logits)
                 + q_light.log_prob(angles))
        return -tf.reduce_mean(log_q)

    def _update_trackers(self, losses, probabilities, batch):
        # The identity error is measured where the identity is observed.
        return super()._update_trackers(losses, probabilities,
                                        {"y": batch["identity"], "y_mask": batch["identity_mask"]})

    def build_variables(self):
        batch = {
            "x": tf.zeros((2, *self.data_shape)),
            "identity": tf.zeros((2,), tf.int32),
            "identity_mask": tf.constant([True, False]),
            "light": tf.constant([[0.0, 0.0, 1.0]] * 2),
            "light_mask": tf.constant([False, True]),
        }
        self.compute_losses(batch)
        self(batch["x"])
        if getattr(self, "optimizer", None) is not None:
            self.optimizer.build(self.trainable_variables)

    # --- serving ------------------------------------------------------------------------

    def _identity_one_hot(self, identities):
        identities = tf.convert_to_tensor(identities)
        if identities.dtype.is_floating or identities.dtype == tf.bool or identities.shape.rank != 1:
            raise ValueError(f"identities: expected integer ids [batch], received {identities.dtype.name} "
                             f"{identities.shape}")
        if tf.executing_eagerly():
            values = identities.numpy()
            if values.size and (values.min() < 0 or values.max() >= self.num_classes):
                bad = values[(values < 0) | (values >= self.num_classes)][0]
                raise ValueError(f"identities: expected ids in [0, {self.num_classes}) (the model's training "
                                 f"identities), received {bad}")
        return tf.one_hot(tf.cast(identities, tf.int32), self.num_classes)

    def classify(self, images):
        """``images`` [batch, 64, 64, 1] -> ``probabilities`` [batch, K] and ``class`` int64 [batch]."""
        images = as_input(images, self.data_shape)
        logits, _ = self.recognise(images)
        probabilities = tf.nn.softmax(logits)
        return {"probabilities": probabilities, "class": tf.argmax(probabilities, axis=-1)}

    def encode(self, images):
        """``images`` [batch, 64, 64, 1] -> identity, lighting and style.

        Returns:
          dict: ``identity_probabilities`` [batch, K], ``identity`` int64 [batch],
          ``light`` [batch, 3] (the unit vector of q's mean angles), ``light_angles`` and
          ``light_angles_scale`` [batch, 2] (azimuth, elevation; q's mean and standard
          deviation, degrees), ``style`` and ``style_scale`` [batch, style_dim] (q's mean and
          standard deviation at the identity probabilities and the mean light).
        """
        images = as_input(images, self.data_shape)
        logits, q_light = self.recognise(images)
        probabilities = tf.nn.softmax(logits)
        light = angles_to_light(q_light.mean())
        style = style_scale = tf.zeros([tf.shape(images)[0], 0])
        if self.style_dim:
            q_style = self.q_style(images, probabilities, light)
            style, style_scale = q_style.mean(), q_style.stddev()
        degrees = 180.0 / math.pi
        return {"identity_probabilities": probabilities, "identity": tf.argmax(probabilities, axis=-1),
                "light": light, "light_angles": q_light.mean() * degrees,
                "light_angles_scale": q_light.stddev() * degrees, "style": style, "style_scale": style_scale}

    def relight(self, images, lights):
        """``images`` [batch, 64, 64, 1] seen under ``lights`` [batch, 3] (unit, z >= 0).

        The decoder's input identity is q's probabilities (for a face of an unseen identity,
        the mixture of training identities it resembles) and the style q's mean.

        Returns:
          dict as ``render``: ``images`` (and ``normals``, ``albedo`` for the intrinsic decoder).
        """
        images = as_input(images, self.data_shape)
        lights = check_lights(lights, "lights", images.shape[0] if tf.executing_eagerly() else None)
        code = self.encode(images)
        return self.render(code["identity_probabilities"], lights, code["style"])

    def reconstruct(self, images):
        """``images`` [batch, 64, 64, 1] -> ``reconstruction``: rendered under q's mean light."""
        code = self.encode(images)
        return {"reconstruction": self.render(code["identity_probabilities"], code["light"], code["style"])["images"]}

    def generate(self, identities, lights, style):
        """``identities`` int [batch] in [0, K), ``lights`` [batch, 3] (unit, z >= 0), ``style``
        [batch, style_dim] -> dict as ``render``."""
        one_hot = self._identity_one_hot(identities)
        batch = one_hot.shape[0] if tf.executing_eagerly() else None
        lights = check_lights(lights, "lights", batch)
        style = as_input(style, (self.style_dim,), "style")
        if batch is not None and style.shape[0] != batch:
            raise ValueError(f"style: expected {batch} rows, one per identity, received {style.shape[0]}")
        return self.render(one_hot, lights, style)

    def generate_signature(self):
        return [tf.TensorSpec((None,), tf.int32, name="identities"),
                tf.TensorSpec((None, 3), tf.float32, name="lights"),
                tf.TensorSpec((None, self.style_dim), tf.float32, name="style")]

    def serving_bounds(self):
        # Lights have no range here: check_lights asserts unit length and z >= 0 in the graph.
        return {**super().serving_bounds(), "identities": (0, self.num_classes)}

    def serving_functions(self):
        images = [self.input_signature()]
        functions = super().serving_functions()
        functions["relight"] = (self.relight, images + [tf.TensorSpec((None, 3), tf.float32, name="lights")])
        return functions


def marginal_kl(logits):
    """KL(mean_i softmax(logits_i) || uniform) of ``logits`` [batch, K]: a scalar in [0, log K]."""
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
    rows = tf.cast(tf.shape(logits)[0], tf.float32)
    log_marginal = tf.reduce_logsumexp(log_probs, axis=0) - tf.math.log(rows)  # [K]
    size = tf.cast(tf.shape(logits)[-1], tf.float32)
    return tf.reduce_sum(tf.exp(log_marginal) * (log_marginal + tf.math.log(size)))


def heldout_errors(model, images, identities, lights, batch_size=500):
    """Identity error and lighting error of ``model`` on labelled images.

    Args:
      model: a ``FacesModel``.
      images: ``[n, 64, 64, 1]``; identities: int ``[n]``; lights: ``[n, 3]`` unit vectors.

    Returns:
      dict: ``identity_error`` (fraction of argmax identities that differ) and
      ``light_error_degrees`` (mean angle between the true light and q's mean light),
      plus ``light_error_median_degrees``.
    """
    images = np.asarray(images, np.float32)
    identities = np.asarray(identities)
    lights = faces_data.check_lights(lights, "lights", num_examples=len(images))
    if identities.shape != (len(images),):
        raise ValueError(f"identities: expected shape ({len(images)},), received {identities.shape}")
    encode = getattr(model, "_heldout_encode", None)
    if encode is None:
        encode = tf.function(lambda x: model.encode(x), input_signature=[model.input_signature()])
        model._heldout_encode = encode
    predicted, estimated = [], []
    for start in range(0, len(images), batch_size):
        code = encode(tf.constant(images[start:start + batch_size]))
        predicted.append(code["identity"].numpy())
        estimated.append(code["light"].numpy())
    angles = angle_degrees(lights, np.concatenate(estimated))
    return {"identity_error": float(np.mean(np.concatenate(predicted) != identities)),
            "light_error_degrees": float(np.mean(angles)),
            "light_error_median_degrees": float(np.median(angles))}


__all__ = ["FacesModel", "angles_to_light", "light_to_angles", "lambertian", "heldout_errors", "marginal_kl"]
