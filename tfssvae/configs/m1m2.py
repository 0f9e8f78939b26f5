"""M1+M2 (Kingma et al. 2014): M1 trained for ``m1_epochs``, then M2 on its frozen latent for
``epochs``; on the embedded digits; variant ``fashion_mnist``."""
from tfssvae.configs import base

VARIANTS = {"fashion_mnist": base.fashion_mnist}


def get_config(variant=None):
    config = base.run_config(
        model=dict(name="m1m2", m1_latent_dim=50, m2_latent_dim=50,
                   hidden_units=(500,),  # M2's hidden widths
                   m1_hidden_units=(500, 500),  # M1's, two layers as in Kingma et al.'s M1+M2
                   activation="softplus", likelihood="bernoulli", alpha=0.1,
                   active_threshold=0.1),  # posterior-mean std. a z1 dimension needs to reach M2
        steps_per_call=10,
        m1_epochs=10,  # epochs of the M1 stage (``epochs`` counts the M2 stage)
    )
    return base.apply_variant(config, variant, VARIANTS, "m1m2.py")
