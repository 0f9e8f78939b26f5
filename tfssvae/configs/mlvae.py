"""ML-VAE (Bouchacourt et al. 2018): groups built from the training labels, on the embedded digits;
variant ``fashion_mnist``."""
from tfssvae.configs import base

VARIANTS = {"fashion_mnist": dict(dataset=base.FASHION_MNIST)}


def get_config(variant=None):
    config = base.run_config(
        model=dict(name="mlvae", content_dim=10, style_dim=10, network="mlp", hidden_units=(500,),
                   activation="softplus", likelihood="bernoulli",
                   group_method="product",  # "product", "average" or "geometric"
                   include_prior=False,  # the prior as one more factor of the group posterior
                   content_per_observation=False),  # sample group content per member, not per group
        groups_per_batch=16,  # groups G in a batch
        group_size=5,  # members K of a group (the largest with variable sizes)
        variable_group_sizes=False,  # group sizes drawn from 1..K
        held_out_classes=(),  # classes whose examples never reach training (unseen groups at evaluation)
    )
    return base.apply_variant(config, variant, VARIANTS, "mlvae.py")
