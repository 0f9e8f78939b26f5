"""CascadeVAE (Jeong and Song 2019) on procedural dSprites.

The model defaults are the official code's (snu-mllab/DisentanglementICML19), and so is
the run length: 300 epochs of 1,000 steps are its 300k iterations, long enough for the
whole schedule (the last dimension is relieved at 120k; ``experiment.validate`` refuses
a schedule that does not fit in the run), and so are its batch of 64 and Adam at 1e-4.

Variant ``cpu``: the official schedule scaled by 3/20 to fit a 2-core CPU in under 45
minutes (issue 9): stages of 3,000 instead of 20,000 iterations (dimensions relieved at 0,
3k, 6k, 9k, 15k and 18k, d learned from 12k), 45k iterations in all (the official 300k
spend 60 % after the last relief; so do these), Adam at 5e-4 so that the fewer steps still
converge, kept constant (the official staircase, scaled like the stages to x0.3 every
7,500 iterations, scored lower: RESULTS.md), and bfloat16 matmuls (1.5x the float32 step on this CPU, RESULTS.md).  The
measured step rates on 2 quiet cores put it at about 27 minutes (32 before the step
replayed the chosen code's pass); the 1/10 schedule (stages
of 2,000, 30k iterations, about 22 minutes) left half the budget unused and scored lower
(FactorVAE 0.674 against 0.764, seed 0; RESULTS.md).  Training
stops at 45 minutes whatever the machine (``time_limit_minutes``).  Every epoch's
checkpoint is kept for the learning curve (``python -m binaries.evaluate --model_dir=DIR
--dataset=sprites --learning_curve``).

The paper's ablations at the same budget: ``cpu_no_cascade``, every dimension at
``beta_l`` from the start (a beta-VAE with the discrete code), and ``cpu_no_assignment``,
d never learned (the decoder always sees the zero code).
"""
from ml_collections import config_dict

from tfssvae.configs import base

# A constant step: the official staircase scaled like the stages (x0.3 every 7,500
# iterations) scored lower at seed 0 (FactorVAE 0.747 against 0.764, RESULTS.md, issue 9).
CPU = dict(epochs=45, learning_rate=5e-4, learning_rate_decay="constant", learning_rate_decay_every=None,
           learning_rate_decay_factor=None, precision="bfloat16", time_limit_minutes=45.0, keep_checkpoints=0)
VARIANTS = {
    "cpu": dict(CPU, model=dict(relieve_every=3000, assign_start=12000)),
    "cpu_no_cascade": dict(CPU, model=dict(relieve_at=(0, 0, 0, 0, 0, 0), assign_start=12000)),
    "cpu_no_assignment": dict(CPU, model=dict(relieve_every=3000, assign_start=None)),
}


def get_config(variant=None):
    config = base.run_config(
        model=dict(name="cascade_vae", latent_dim=6,
                   discrete_size=3,  # values of the discrete code d
                   beta_h=10.0,  # KL weight of penalised dimensions
                   beta_l=0.1,  # KL weight of relieved dimensions
                   relieve_every=20000,  # iterations of a stage; stage i relieves dimension i + 1
                   relieve_at=config_dict.placeholder(tuple),  # explicit iterations; None: the official stages
                   # iteration from which d is learned by assignment; None: never (an ablation)
                   assign_start=config_dict.FieldReference(80000, field_type=int),
                   pair_penalty=0.001,  # cost per pair of batch examples sharing d
                   solver="fast",  # "fast" or "networkx"
                   filters=(32, 32, 64, 64),  # encoder convs
                   dense_units=256,  # encoder and decoder hidden dense layer
                   decoder_filters=(64, 32, 32),  # decoder hidden transposed convs
                   l2_weight=2e-5,  # L2 per squared kernel weight (slim's 4e-5 / 2)
                   # with several replicas (strategy), d by one assignment over the global
                   # batch; False: each replica's share on its own
                   global_assignment=True,
                   d_from_labels=False),  # d = the shape label: a diagnostic, not the method (RESULTS.md)
        dataset="sprites",
        batch_size=64,
        learning_rate=1e-4,
        # The official Adam step: 1e-4, times 0.3 every 50k iterations (tfops/lr_op.py, 'stair', 'a3').
        learning_rate_decay="staircase",
        learning_rate_decay_every=50000,
        learning_rate_decay_factor=0.3,
        steps_per_call=10,  # training steps per tf.function call (the host still solves every step's d)
        epochs=300,  # the official 300k iterations
        steps_per_epoch=1000,  # sprites are endless; an epoch is this many steps
        eval_samples=10000,  # examples for MIG and shape accuracy (and FactorVAE's global variances)
        factor_vae_votes=(10000, 5000),  # FactorVAE training / evaluation votes
        # FactorVAE vote batches are drawn from this many images encoded once per (factor,
        # value) (metrics.factor_vae_score); 0: fresh images for every vote (960k images).
        factor_vae_samples_per_value=256,
    )
    return base.apply_variant(config, variant, VARIANTS, "cascade_vae.py")
