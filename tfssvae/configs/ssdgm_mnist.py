"""ssdgm_mnist (Siddharth et al. 2017): M2's graph with MLP networks and the importance-sampled
objective; on the embedded digits; variant ``fashion_mnist``."""
from tfssvae.configs import base

VARIANTS = {"fashion_mnist": base.fashion_mnist}


def get_config(variant=None):
    config = base.run_config(
        model=dict(name="ssdgm_mnist", latent_dim=50, hidden_units=(500,), activation="softplus",
                   likelihood="bernoulli", alpha=0.1, network="mlp",
                   kl_z_weight=1.0,  # weight of KL(q(z | x, y) || p(z)); 1: the bound
                   gamma=1.0,  # weight of the supervised examples' bounds
                   num_samples=1,  # S, samples of z per example
                   variant="weighted",  # "weighted" (the paper's estimator) or "iw" (log-mean-exp)
                   discrete="enumerate",  # the latent class summed out ("enumerate") or Concrete ("relax")
                   temperature=0.66),  # Concrete temperature
        steps_per_call=10,
        learning_rate=base.DIGITS_LEARNING_RATE,  # the fashion_mnist variant sets the official 3e-4
    )
    return base.apply_variant(config, variant, VARIANTS, "ssdgm_mnist.py")
