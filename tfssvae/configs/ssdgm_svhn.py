"""ssdgm_svhn (Siddharth et al. 2017): M2's graph with convolutional networks, on SVHN from TFDS."""
from tfssvae.configs import base

VARIANTS = {}


def get_config(variant=None):
    config = base.run_config(
        model=dict(name="ssdgm_svhn", latent_dim=50, hidden_units=(500,), activation="softplus",
                   likelihood="bernoulli", alpha=0.1, network="conv",
                   gamma=1.0,  # weight of the supervised examples' bounds
                   num_samples=1,  # S, samples of z per example
                   variant="weighted",  # "weighted" (the paper's estimator) or "iw" (log-mean-exp)
                   discrete="enumerate",  # the latent class summed out ("enumerate") or Concrete ("relax")
                   temperature=0.66),  # Concrete temperature
        dataset="tfds:svhn_cropped",
    )
    return base.apply_variant(config, variant, VARIANTS, "ssdgm_svhn.py")
