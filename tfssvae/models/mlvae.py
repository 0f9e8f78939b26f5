"""ML-VAE (Bouchacourt, Tomioka, Nowozin 2018): content shared by a group, style per observation.

Each observation x_i has a style posterior q(S_i | x_i) and a content posterior
q(C | x_i); the content of a group G is their product over the members
(``grouping.group_posterior``), so evidence accumulates with the group's size.  The
group ELBO is

    sum_{i in G} E[log p(x_i | C_G, S_i)] - KL(q(C_G | X_G) || p(C)) - sum_{i in G} KL(q(S_i | x_i) || p(S))

summed over the groups of a batch and divided by their number.  Batches carry a
segment id per row (``"group"``), in any order, groups of any size.
"""
import tensorflow as tf
import tensorflow_probability as tfp

from tfssvae import distributions, grouping, networks
from tfssvae.models.base import GenerativeModel, as_input, observation_layer, standard_normal

tfd = tfp.distributions

NETWORKS = ("mlp", "conv")


def _normal(loc, scale):
    return tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=1)


class MLVAE(GenerativeModel):
    """The ML-VAE.

    Args:
      input_shape: one image ``(H, W, C)``.
      num_classes: classes of the data's labels (for probes and metrics only; the model never sees labels).
      content_dim, style_dim: latent sizes.
      network: ``"mlp"`` or ``"conv"`` encoders/decoder.
      hidden_units, activation: MLP settings.
      likelihood: ``"bernoulli"`` or ``"gaussian"``.
      group_method: ``"product"`` (ML-VAE), ``"average"`` or ``"geometric"`` (for comparison).
      include_prior: multiply the prior into the group posterior as one more factor.
      content_per_observation: sample the group content once per member instead of once per group.
      kl_style_weight: the weight beta of the style KL in the training loss (1: the ELBO; above 1
        the style pays more for what it holds, as in a beta-VAE).  The reported terms stay unweighted.
    """

    loss_names = ("loss", "reconstruction", "kl_content", "kl_style")
    has_classifier = False

    def __init__(self, input_shape, num_classes, content_dim=10, style_dim=10, network="mlp",
                 hidden_units=(500,), activation="softplus", likelihood="bernoulli", group_method="product",
                 include_prior=False, content_per_observation=False, kl_style_weight=1.0, **kwargs):
        super().__init__(input_shape, num_classes, **kwargs)
        if network not in NETWORKS:
            raise ValueError(f"network: expected one of {NETWORKS}, received {network!r}")
        if group_method not in grouping.METHODS:
            raise ValueError(f"group_method: expected one of {grouping.METHODS}, received {group_method!r}")
        if not float(kl_style_weight) > 0:
            raise ValueError(f"kl_style_weight: expected a positive number, received {kl_style_weight!r}")
        if min(int(content_dim), int(style_dim)) < 1:
            raise ValueError(f"content_dim and style_dim: expected positive sizes, received {content_dim}, {style_dim}")
        self._config = dict(
            input_shape=self.data_shape, num_classes=self.num_classes, content_dim=int(content_dim),
            style_dim=int(style_dim), network=network, hidden_units=tuple(int(h) for h in hidden_units),
            activation=activation, likelihood=likelihood, group_method=group_method,
            include_prior=bool(include_prior), content_per_observation=bool(content_per_observation),
            kl_style_weight=float(kl_style_weight),
        )
        self.content_dim, self.style_dim = int(content_dim), int(style_dim)
        self.likelihood = observation_layer(likelihood, self.data_shape)
        content_params = distributions.DiagonalNormal.params_size(self.content_dim)
        style_params = distributions.DiagonalNormal.params_size(self.style_dim)
        if network == "mlp":
            mlp = dict(hidden_units=self._config["hidden_units"], activation=activation)
            self.content_encoder = networks.mlp([self.data_shape], content_params, name="content_encoder", **mlp)
            self.style_encoder = networks.mlp([self.data_shape], style_params, name="style_encoder", **mlp)
            self.decoder_network = networks.mlp(
                [(self.content_dim,), (self.style_dim,)], type(self.likelihood).params_size(self.data_shape),
                name="decoder", **mlp)
        else:
            self.content_encoder = networks.conv_encoder(self.data_shape, content_params, name="content_encoder")
            self.style_encoder = networks.conv_encoder(self.data_shape, style_params, name="style_encoder")
            self.decoder_network = networks.conv_decoder(
                [(self.content_dim,), (self.style_dim,)], self.data_shape,
                params_per_pixel=type(self.likelihood).params_size(1), name="decoder")
        self.content_layer = distributions.DiagonalNormal(self.content_dim, name="q_content")
        self.style_layer = distributions.DiagonalNormal(self.style_dim, name="q_style")
        self.prior_content = standard_normal(self.content_dim)
        self.prior_style = standard_normal(self.style_dim)

    def get_config(self):
        return dict(self._config)

    # --- the pieces ------------------------------------------------------------------------

    def observation_codes(self, x, training=False):
        """Per observation: ``(content_loc, content_scale, style)`` with style a Normal over [batch, style_dim]."""
        content = self.content_layer(self.content_encoder(x, training=training))
        return content.mean(), content.stddev(), self.style_layer(self.style_encoder(x, training=training))

    def group_content(self, content_loc, content_scale, group_ids, num_groups=None):
        """q(C_G | X_G) per group: ``(loc, scale)`` each ``[num_groups, content_dim]``."""
        return grouping.group_posterior(content_loc, content_scale, group_ids, num_groups=num_groups,
                                        method=self._config["group_method"],
                                        include_prior=self._config["include_prior"])

    def p_x(self, content, style, training=False):
        return self.likelihood(self.decoder_network([content, style], training=training))

    def compute_losses(self, batch, training=False):
        x = as_input(batch["x"], self.data_shape, "x")
        group_ids = batch["group"]
        content_loc, content_scale, q_style = self.observation_codes(x, training)
        group_loc, group_scale = self.group_content(content_loc, content_scale, group_ids)
        q_content = _normal(group_loc, group_scale)
        if self._config["content_per_observation"]:
            member = grouping.gather_to_members((group_loc, group_scale), group_ids)
            content = _normal(*member).sample()
        else:
            content = grouping.gather_to_members(q_content.sample(), group_ids)
        log_likelihood = self.p_x(content, q_style.sample(), training).log_prob(x)
        # Ids without members (none in the batchers' output) get the prior and must not count.
        present = tf.cast(grouping.group_sizes(group_ids, tf.shape(group_loc)[0]) > 0, tf.float32)
        num_groups = tf.reduce_sum(present)
        kl_content = tf.reduce_sum(present * tfd.kl_divergence(q_content, self.prior_content)) / num_groups
        kl_style = tf.reduce_sum(tfd.kl_divergence(q_style, self.prior_style)) / num_groups
        reconstruction = -tf.reduce_sum(log_likelihood) / num_groups
        losses = {
            "loss": reconstruction + kl_content + self._config["kl_style_weight"] * kl_style,
            "reconstruction": reconstruction,
            "kl_content": kl_content,
            "kl_style": kl_style,
        }
        return losses, None

    # --- serving -----------------------------------------------------------------------------

    def encode(self, images):
        """Single observations: ``content_mean``/``content_scale`` [batch, content_dim] (a group of one each),
        ``style_mean``/``style_scale`` [batch, style_dim], and ``mean``, their concatenation."""
        images = as_input(images, self.data_shape)
        content_loc, content_scale, q_style = self.observation_codes(images)
        alone = tf.range(tf.shape(images)[0])
        content_mean, content_scale = self.group_content(content_loc, content_scale, alone, tf.shape(images)[0])
        return {
            "content_mean": content_mean, "content_scale": content_scale,
            "style_mean": q_style.mean(), "style_scale": q_style.stddev(),
            "mean": tf.concat([content_mean, q_style.mean()], axis=-1),
        }

    def encode_group(self, images, group_ids):
        """Test-time grouping: ``images`` [batch, H, W, C], ``group_ids`` int [batch] -> the group contents
        ``content_mean``/``content_scale`` [num_groups, content_dim] with num_groups = max id + 1."""
        images = as_input(images, self.data_shape)
        content_loc, content_scale, _ = self.observation_codes(images)
        loc, scale = self.group_content(content_loc, content_scale, group_ids)
        return {"content_mean": loc, "content_scale": scale}

    def reconstruct(self, images):
        code = self.encode(images)
        return {"reconstruction": self.p_x(code["content_mean"], code["style_mean"]).mean()}

    def generate(self, content, style):
        """``content`` [batch, content_dim] and ``style`` [batch, style_dim] -> ``images``, the mean of p(x | C, S)."""
        content = as_input(content, (self.content_dim,), "content")
        style = as_input(style, (self.style_dim,), "style")
        return {"images": self.p_x(content, style).mean()}

    def generate_signature(self):
        return [tf.TensorSpec((None, self.content_dim), tf.float32, name="content"),
                tf.TensorSpec((None, self.style_dim), tf.float32, name="style")]

    def serving_functions(self):
        functions = super().serving_functions()
        functions["encode_group"] = (self.encode_group, [
            self.input_signature(), tf.TensorSpec((None,), tf.int32, name="group_ids")])
        return functions
