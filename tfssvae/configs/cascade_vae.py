"""CascadeVAE (Jeong and Song 2019) on procedural dSprites.

The model defaults are the official code's; its batch is 64 and its learning rate 1e-4
(``--config.batch_size=64 --config.learning_rate=1e-4``).
"""
from ml_collections import config_dict

from tfssvae.configs import base

VARIANTS = {}


def get_config(variant=None):
    config = base.run_config(
        model=dict(name="cascade_vae", latent_dim=6,
                   discrete_size=3,  # values of the discrete code d
                   beta_h=10.0,  # KL weight of penalised dimensions
                   beta_l=0.1,  # KL weight of relieved dimensions
                   relieve_every=20000,  # iterations between relieving one more dimension
                   relieve_at=config_dict.placeholder(tuple),  # explicit iterations; None: every relieve_every
                   assign_start=80000,  # iteration from which d is learned by assignment
                   pair_penalty=0.001,  # cost per pair of batch examples sharing d
                   solver="fast",  # "fast" or "networkx"
                   filters=(32, 32, 64, 64), dense_units=256),
        dataset="sprites",
        steps_per_epoch=1000,  # sprites are endless; an epoch is this many steps
        eval_samples=10000,  # examples for MIG and shape accuracy
        factor_vae_votes=(10000, 5000),  # FactorVAE training / evaluation votes
    )
    return base.apply_variant(config, variant, VARIANTS, "cascade_vae.py")
