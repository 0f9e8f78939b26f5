"""M1 (Kingma et al. 2014): the VAE alone, on the embedded digits."""
from tfssvae.configs import base

VARIANTS = {"fashion_mnist": dict(dataset=base.FASHION_MNIST)}


def get_config(variant=None):
    config = base.run_config(
        model=dict(name="m1", latent_dim=50, hidden_units=(500,), activation="softplus", likelihood="bernoulli",
                   kl_z_weight=1.0),  # weight of KL(q(z | x) || p(z)); 1: the ELBO
    )
    return base.apply_variant(config, variant, VARIANTS, "m1.py")
