"""The MNIST and SVHN models of Siddharth et al. (2017): M2's graph, declared with ``tfssvae.graph``.

Recognition model q(y | x) q(z | x, y), generative model p(y) p(z) p(x | y, z), with y the
class (supervised for some examples) and z a continuous style: the networks, and so the
serving methods, are M2's; what differs is the objective.  Instead of M2's dedicated
bounds the model is written as two graph functions and trained with the importance-
sampled objective of ``objectives.partially_supervised_bound``; the latent class is summed
out exactly (``discrete="enumerate"``) or relaxed (``discrete="relax"``).  MLP networks for
``ssdgm_mnist``, convolutional ones for ``ssdgm_svhn``.
"""
import tensorflow as tf
import tensorflow_probability as tfp

from tfssvae import objectives
from tfssvae.models.base import as_input
from tfssvae.models.m2 import M2

tfd = tfp.distributions

DISCRETE = ("enumerate", "relax")


class SSDGM(M2):
    """M2's networks trained as a partially-specified graphical model.

    Args (beyond M2's, which include ``network``):
      gamma: weight of the supervised examples' bounds.
      num_samples: S, samples of z per example.
      variant: ``"weighted"`` or ``"iw"``.
      discrete: ``"enumerate"`` or ``"relax"`` for the latent class.
      temperature: Concrete temperature.
    """

    loss_names = ("loss", "reconstruction", "bound", "classification")
    xla_incompatibility = None  # the graph objective's rows are copies of the batch: static shapes

    def __init__(self, input_shape, num_classes, gamma=1.0, num_samples=1, variant="weighted",
                 discrete="enumerate", temperature=0.66, **kwargs):
        super().__init__(input_shape, num_classes, **kwargs)
        if discrete not in DISCRETE:
            raise ValueError(f"discrete: expected one of {DISCRETE}, received {discrete!r}")
        if variant not in objectives.VARIANTS:
            raise ValueError(f"variant: expected one of {objectives.VARIANTS}, received {variant!r}")
        if int(num_samples) < 1:
            raise ValueError(f"num_samples: expected S >= 1, received {num_samples}")
        if gamma < 0:
            raise ValueError(f"gamma: expected a non-negative weight, received {gamma}")
        if self.kl_z_weight != 1.0 and variant != "weighted":
            raise ValueError(f"kl_z_weight: {self.kl_z_weight} needs the analytic KL of z, which the "
                             f"{variant!r} variant does not use; use variant='weighted' or kl_z_weight=1")
        self.graph_options = dict(gamma=float(gamma), num_samples=int(num_samples), variant=variant,
                                  discrete=discrete, temperature=float(temperature))

    def get_config(self):
        return {**super().get_config(), **self.graph_options}

    def encode_graph(self, q, x, training=False):
        """q(y | x) then q(z | x, y)."""
        y = q.discrete("y", self.classifier(x, training=training))
        q.variable("z", self.q_z(x, y, training=training))

    def decode_graph(self, p, x, training=False):
        """p(y) uniform, p(z) = N(0, I), p(x | y, z)."""
        rows = tf.shape(x)[0]
        y = p.discrete("y", tf.zeros([rows, self.num_classes]))
        z = p.variable("z", tfd.Independent(tfd.Normal(tf.zeros([rows, self.latent_dim]), 1.0), 1))
        p.observe("x", self.p_x(y, z, training=training), x)

    def compute_losses(self, batch, training=False):
        x = as_input(batch["x"], self.data_shape, "x")
        options = self.graph_options
        result = objectives.partially_supervised_bound(
            lambda q, x: self.encode_graph(q, x, training), lambda p, x: self.decode_graph(p, x, training),
            x, supervision={"y": (batch["y"], batch["y_mask"])}, num_samples=options["num_samples"],
            alpha=self.classification_weight, variant=options["variant"], temperature=options["temperature"],
            enumerate=("y", self.num_classes) if options["discrete"] == "enumerate" else None,
            kl_weights={"z": self.kl_z_weight} if self.kl_z_weight != 1.0 else None,
        )
        supervised = result["supervised"]
        example_weights = tf.where(supervised, options["gamma"], 1.0)
        losses = {
            "loss": -tf.reduce_mean(example_weights * result["bound"]),
            "reconstruction": -tf.reduce_mean(result["log_likelihood"]),
            "bound": -tf.reduce_mean(result["bound"]),
            "classification": -objectives.masked_mean(result["classification"], supervised),
        }
        # q(y | x) of the first copy of the batch, for the error metric.
        logits = result["q"].records["y"].distribution.logits_parameter()[:tf.shape(x)[0]]
        return losses, tf.nn.softmax(logits)


class SSDGMMnist(SSDGM):
    """``--model=ssdgm_mnist``: MLP networks."""

    def __init__(self, input_shape, num_classes, network="mlp", **kwargs):
        super().__init__(input_shape, num_classes, network=network, **kwargs)


class SSDGMSvhn(SSDGM):
    """``--model=ssdgm_svhn``: convolutional networks."""

    def __init__(self, input_shape, num_classes, network="conv", **kwargs):
        super().__init__(input_shape, num_classes, network=network, **kwargs)
