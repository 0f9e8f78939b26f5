"""The MNIST and SVHN models of Siddharth et al. (2017), written only with ``tfssvae.graph``.

Recognition model q(y | x) q(z | x, y), generative model p(y) p(z) p(x | y, z) with y the
class (supervised for some examples) and z a continuous style.  MLP networks for
``ssdgm_mnist``, convolutional ones for ``ssdgm_svhn``.  Trained with the importance-
sampled objective of ``objectives.partially_supervised_bound``; the latent class is
either summed out exactly (``discrete="enumerate"``, which makes this M2 trained with the
paper's supervised estimator) or relaxed (``discrete="relax"``, Concrete samples).
"""
import tensorflow as tf
import tensorflow_probability as tfp

from tfssvae import distributions, networks, objectives
from tfssvae.models.base import GenerativeModel, as_input, observation_layer, one_hot_classes

tfd = tfp.distributions

DISCRETE = ("enumerate", "relax")
NETWORKS = ("mlp", "conv")


class SSDGM(GenerativeModel):
    """A class-and-style model declared as a graph.

    Args:
      input_shape: one image, ``(H, W, C)``.
      num_classes: K.
      latent_dim: size of the style z.
      network: ``"mlp"`` or ``"conv"``.
      hidden_units, activation: MLP widths / activation (``conv`` uses the conv builders' defaults).
      likelihood: ``"bernoulli"`` or ``"gaussian"``.
      alpha: classifier weight; scaled by ``num_examples / num_labelled`` when both are given.
      gamma: weight of the supervised examples' bounds.
      num_samples: S, samples of z per example.
      variant: ``"weighted"`` or ``"iw"``.
      discrete: ``"enumerate"`` or ``"relax"`` for the latent class.
      temperature: Concrete temperature.
    """

    loss_names = ("loss", "reconstruction", "bound", "classification")

    def __init__(self, input_shape, num_classes, latent_dim=50, network="mlp", hidden_units=(500,),
                 activation="softplus", likelihood="bernoulli", alpha=0.1, gamma=1.0, num_samples=1,
                 variant="weighted", discrete="enumerate", temperature=0.66, num_examples=None,
                 num_labelled=None, **kwargs):
        super().__init__(input_shape, num_classes, **kwargs)
        if network not in NETWORKS:
            raise ValueError(f"network: expected one of {NETWORKS}, received {network!r}")
        if discrete not in DISCRETE:
            raise ValueError(f"discrete: expected one of {DISCRETE}, received {discrete!r}")
        if variant not in objectives.VARIANTS:
            raise ValueError(f"variant: expected one of {objectives.VARIANTS}, received {variant!r}")
        if int(num_samples) < 1:
            raise ValueError(f"num_samples: expected S >= 1, received {num_samples}")
        if gamma < 0 or alpha < 0:
            raise ValueError(f"alpha and gamma: expected non-negative weights, received {alpha}, {gamma}")
        self._config = dict(
            input_shape=self.data_shape, num_classes=self.num_classes, latent_dim=int(latent_dim),
            network=network, hidden_units=tuple(int(h) for h in hidden_units), activation=activation,
            likelihood=likelihood, alpha=float(alpha), gamma=float(gamma), num_samples=int(num_samples),
            variant=variant, discrete=discrete, temperature=float(temperature),
            num_examples=num_examples, num_labelled=num_labelled,
        )
        self.latent_dim = int(latent_dim)
        self.classifier_weight = float(alpha) * (num_examples / num_labelled if num_examples and num_labelled else 1.0)
        K, d = self.num_classes, self.latent_dim
        self.likelihood = observation_layer(likelihood, self.data_shape)
        z_params = distributions.DiagonalNormal.params_size(d)
        x_params = type(self.likelihood).params_size(self.data_shape)
        if network == "mlp":
            mlp = dict(hidden_units=self._config["hidden_units"], activation=activation)
            self.classifier = networks.mlp([self.data_shape], K, name="classifier", **mlp)
            self.encoder = networks.mlp([self.data_shape, (K,)], z_params, name="encoder", **mlp)
            self.decoder_network = networks.mlp([(K,), (d,)], x_params, name="decoder", **mlp)
        else:
            self.classifier = networks.conv_encoder(self.data_shape, K, name="classifier")
            self.encoder = networks.conv_encoder(self.data_shape, z_params, extra_input_shapes=[(K,)],
                                                 name="encoder")
            self.decoder_network = networks.conv_decoder(
                [(K,), (d,)], self.data_shape, params_per_pixel=type(self.likelihood).params_size(1),
                name="decoder",
            )
        self.posterior_z = distributions.DiagonalNormal(d, name="q_z")

    def get_config(self):
        return dict(self._config)

    # --- the graph -------------------------------------------------------------------------

    def encode_graph(self, q, x, training=False):
        """q(y | x) then q(z | x, y)."""
        y = q.discrete("y", self.classifier(x, training=training))
        q.variable("z", self.posterior_z(self.encoder([x, y], training=training)))

    def decode_graph(self, p, x, training=False):
        """p(y) uniform, p(z) = N(0, I), p(x | y, z)."""
        rows = tf.shape(x)[0]
        y = p.discrete("y", tf.zeros([rows, self.num_classes]))
        z = p.variable("z", tfd.Independent(tfd.Normal(tf.zeros([rows, self.latent_dim]), 1.0), 1))
        p.observe("x", self.likelihood(self.decoder_network([y, z], training=training)), x)

    def compute_losses(self, batch, training=False):
        x = as_input(batch["x"], self.data_shape, "x")
        config = self._config
        result = objectives.partially_supervised_bound(
            lambda q, x: self.encode_graph(q, x, training), lambda p, x: self.decode_graph(p, x, training),
            x, supervision={"y": (batch["y"], batch["y_mask"])}, num_samples=config["num_samples"],
            alpha=self.classifier_weight, variant=config["variant"], temperature=config["temperature"],
            enumerate=("y", self.num_classes) if config["discrete"] == "enumerate" else None,
        )
        supervised = result["supervised"]
        example_weights = tf.where(supervised, config["gamma"], 1.0)
        losses = {
            "loss": -tf.reduce_mean(example_weights * result["bound"]),
            "reconstruction": -tf.reduce_mean(result["log_likelihood"]),
            "bound": -tf.reduce_mean(result["bound"]),
            "classification": -objectives.masked_mean(result["classification"], supervised),
        }
        # q(y | x) of the first copy of the batch, for the error metric.
        batch_size = tf.shape(x)[0]
        probabilities = tf.nn.softmax(result["q"].records["y"].distribution.logits_parameter()[:batch_size])
        return losses, probabilities

    # --- serving -----------------------------------------------------------------------------

    def classify(self, images):
        images = as_input(images, self.data_shape)
        probabilities = tf.nn.softmax(self.classifier(images))
        return {"probabilities": probabilities, "class": tf.argmax(probabilities, axis=-1)}

    def encode(self, images):
        """q(z | x, y) at the predicted class: ``mean``/``scale`` [batch, latent_dim], ``class`` [batch]."""
        images = as_input(images, self.data_shape)
        predicted = self.classify(images)["class"]
        q = self.posterior_z(self.encoder([images, tf.one_hot(predicted, self.num_classes)]))
        return {"mean": q.mean(), "scale": q.stddev(), "class": predicted}

    def _image_mean(self, y_one_hot, latent):
        return self.likelihood(self.decoder_network([y_one_hot, latent])).mean()

    def reconstruct(self, images):
        """Mean of p(x | y, z) at the predicted class and the posterior mean of z: [batch, H, W, C]."""
        code = self.encode(images)
        return {"reconstruction": self._image_mean(tf.one_hot(code["class"], self.num_classes), code["mean"])}

    def generate(self, labels, latent):
        """``labels`` int [batch], ``latent`` [batch, latent_dim] -> ``images``, the mean of p(x | y, z)."""
        latent = as_input(latent, (self.latent_dim,), "latent")
        return {"images": self._image_mean(one_hot_classes(labels, self.num_classes), latent)}

    def generate_signature(self):
        return [
            tf.TensorSpec((None,), tf.int32, name="labels"),
            tf.TensorSpec((None, self.latent_dim), tf.float32, name="latent"),
        ]


class SSDGMMnist(SSDGM):
    """``--model=ssdgm_mnist``: MLP networks."""

    def __init__(self, input_shape, num_classes, network="mlp", **kwargs):
        super().__init__(input_shape, num_classes, network=network, **kwargs)


class SSDGMSvhn(SSDGM):
    """``--model=ssdgm_svhn``: convolutional networks."""

    def __init__(self, input_shape, num_classes, network="conv", **kwargs):
        super().__init__(input_shape, num_classes, network=network, **kwargs)
