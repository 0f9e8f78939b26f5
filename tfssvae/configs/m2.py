"""M2 (Kingma et al. 2014): on the embedded digits; variant ``fashion_mnist``."""
from tfssvae.configs import base

VARIANTS = {"fashion_mnist": base.fashion_mnist}


def get_config(variant=None):
    config = base.run_config(
        model=dict(name="m2", latent_dim=50, hidden_units=(500,), activation="softplus", likelihood="bernoulli",
                   alpha=0.1, network="mlp",
                   kl_z_weight=1.0),  # weight of KL(q(z | x, y) || p(z)); 1: the ELBO (RESULTS.md, issue 8)
        steps_per_call=10,
        learning_rate=base.DIGITS_LEARNING_RATE,  # the fashion_mnist variant sets the official 3e-4
    )
    return base.apply_variant(config, variant, VARIANTS, "m2.py")
