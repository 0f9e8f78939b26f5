"""ssdgm_svhn (Siddharth et al. 2017): ssdgm_mnist's graph and objective with convolutional
networks, on SVHN from TFDS."""
from tfssvae.configs import base, ssdgm_mnist

VARIANTS = {}


def get_config(variant=None):
    config = ssdgm_mnist.get_config()
    config.model.name = "ssdgm_svhn"
    config.model.network = "conv"
    config.dataset = "tfds:svhn_cropped"
    config.steps_per_call = 1
    return base.apply_variant(config, variant, VARIANTS, "ssdgm_svhn.py")
