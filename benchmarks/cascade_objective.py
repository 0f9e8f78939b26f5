r"""CascadeVAE: the training objective of trained models on fresh sprites, with d chosen by
the model and with d the true shape.

  python benchmarks/cascade_objective.py --model_dirs=DIR1,DIR2 [--samples=10000]

For every model directory (a ``binaries.train`` run of ``configs/cascade_vae.py``), on
``--samples`` sprites drawn uniformly over the factors (the same sprites and noise for
every model), one JSON line of per-image means in nats:

- ``reconstruction_d_model``: -log p(x | z, d) with d the arg-min of the unaries, the
  model's own choice at test time (the training flow adds only ``pair_penalty`` per pair);
- ``reconstruction_d_shape``: the same with d the sprite's shape, matched to d's values
  one-to-one as the shape accuracy matches them;
- ``kl``: KL(q(z | x) || N(0, I)) summed over the dimensions;
- ``objective_d_model`` and ``objective_d_shape``: reconstruction + beta_l * KL, the loss
  at the end of the schedule (every dimension relieved; the L2 penalty left out).

z is one reparameterised draw per image.  Comparing ``objective_d_model`` across runs
tells which partition of the sprites the objective prefers, whatever the partition's
meaning (issue 9: a run whose d was fed the shape against runs whose d was assigned).
"""
import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

flags.DEFINE_list("model_dirs", None, "Model directories of CascadeVAE runs.", required=True)
flags.DEFINE_integer("samples", 10000, "Fresh sprites to average over.")
flags.DEFINE_integer("batch_size", 500, "Sprites encoded and decoded at once.")
flags.DEFINE_integer("seed", 0, "Seed of the sprites and of the draws of z.")
FLAGS = flags.FLAGS


def objective(model, images, shapes, noise, batch_size):
    """Per-image means (see the module docstring) of ``model`` on ``images`` [n, 64, 64, 1]."""
    import numpy as np
    import tensorflow as tf

    from tfssvae import metrics
    from tfssvae.models.cascade_vae import standard_normal_kl

    unaries, kls = [], []
    for start in range(0, len(images), batch_size):
        x = tf.constant(images[start:start + batch_size])
        q = model.posterior_z(model.encoder(x))
        mean, scale = q.mean(), q.stddev()
        z = mean + scale * noise[start:start + batch_size]
        unaries.append(model.unaries(x, z).numpy())
        kls.append(tf.reduce_sum(standard_normal_kl(mean, scale), axis=-1).numpy())
    unaries, kl = np.concatenate(unaries), float(np.mean(np.concatenate(kls)))
    chosen = unaries.argmin(axis=1)
    # d's value for each shape: the one-to-one matching of the shape accuracy; a shape left
    # unmatched (d takes fewer values than there are shapes) gets a value d never takes.
    matched = metrics.best_matching(chosen, shapes)
    spare = iter(sorted(set(range(unaries.shape[1])) - set(matched.values())))
    value_of_shape = np.array([matched[s] if s in matched else next(spare) for s in range(shapes.max() + 1)])
    beta_l = model.get_config()["beta_l"]
    reconstruction = {"model": float(np.mean(unaries.min(axis=1))),
                      "shape": float(np.mean(unaries[np.arange(len(shapes)), value_of_shape[shapes]]))}
    return {**{f"reconstruction_d_{k}": v for k, v in reconstruction.items()}, "kl": kl,
            **{f"objective_d_{k}": v + beta_l * kl for k, v in reconstruction.items()}}


def main(argv):
    del argv
    import numpy as np

    from tfssvae import export
    from tfssvae.data import sprites

    truth = sprites.SpritesGroundTruth()
    rng = np.random.default_rng(FLAGS.seed)
    factors = truth.sample_factors(FLAGS.samples, rng)
    images = truth.observations(factors)
    noise = {}  # by latent size: the same draws for every model
    for model_dir in FLAGS.model_dirs:
        name, model = export.restore_run(model_dir)
        if name != "cascade_vae":
            raise SystemExit(f"--model_dirs: {model_dir} holds a {name} run, not cascade_vae")
        if model.latent_dim not in noise:
            noise[model.latent_dim] = rng.standard_normal((FLAGS.samples, model.latent_dim)).astype(np.float32)
        result = objective(model, images, factors[:, 0], noise[model.latent_dim], FLAGS.batch_size)
        print(json.dumps({"model_dir": model_dir, "samples": FLAGS.samples, **result}), flush=True)


if __name__ == "__main__":
    app.run(main)
