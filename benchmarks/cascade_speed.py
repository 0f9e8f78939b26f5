r"""Benchmark: CascadeVAE training speed against a plain conv VAE of the same network, and
the time of its metric suite, with the machine's ceiling beside it.

  python benchmarks/cascade_speed.py --steps=200 --rounds=3 --precisions=float32,bfloat16

In one process, for every precision (Keras policy ``float32`` or ``mixed_bfloat16``),
three steps on the same pre-rendered sprite batches, each a ``tf.function`` with Adam
(``fused.Adam``, the one ``training.train`` uses):

- ``plain_vae``: the official encoder and decoder as one Keras VAE (Bernoulli
  reconstruction, KL, L2 on the kernels), no discrete code: the ceiling of a step;
- ``warm_up``: ``CascadeVAE.train_step`` before ``assign_start`` (the zero code);
- ``assignment``: ``CascadeVAE.train_step`` after it (K-value unaries without gradient,
  the host min-cost flow, one decoder pass with gradient).

The three alternate within each round (``--rounds`` rounds of ``--steps`` timed steps
after ``--warmup`` untimed ones), so a change of machine load hits all of them; the
median examples/s over rounds is reported, with the ratio of each step to ``plain_vae``.
Then, unless ``--metrics=false``, ``evaluation.cascade_report`` on the float32 model (any
weights time the same): FactorVAE with ``--factor_vae_votes``, MIG and shape accuracy on
``--eval_samples``.  Beside the rates: the conv and dense FLOPs of one training example
of each step kind (forward, and twice that backward; the assignment step adds K - 1
decoder passes forward only: its K unary passes include the chosen code's, whose backward
pass replays it) and the machine's measured matmul rate, so "examples/s at the
ceiling" = rate / FLOPs per example.  Prints a JSON summary (and writes it to ``--output``
if given).
"""
import json
import os
import platform
import statistics
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.ceiling import forward_macs, matmul_gflops  # noqa: E402

flags.DEFINE_integer("batch_size", 64, "Examples per step (official: 64).")
flags.DEFINE_integer("steps", 100, "Timed steps per round and step kind.")
flags.DEFINE_integer("warmup", 10, "Untimed steps before the rounds (tracing, allocator).")
flags.DEFINE_integer("rounds", 3, "Rounds; the three step kinds alternate within a round.")
flags.DEFINE_list("precisions", ["float32", "bfloat16"], "Precisions to measure.")
flags.DEFINE_integer("batches", 8, "Distinct pre-rendered batches cycled through (rendering is not timed).")
flags.DEFINE_boolean("metrics", True, "Also time the metric suite (evaluation.cascade_report).")
flags.DEFINE_integer("eval_samples", None, "Samples for MIG and shape accuracy; default: the config's.")
flags.DEFINE_list("factor_vae_votes", None, "FactorVAE training, evaluation votes; default: the config's.")
flags.DEFINE_integer("samples_per_value", None, "FactorVAE images per (factor, value); default: the config's.")
flags.DEFINE_integer("seed", 0, "Seed of weights and batches.")
flags.DEFINE_string("output", None, "Also write the JSON summary here.")
FLAGS = flags.FLAGS


def plain_vae(config, l2):
    """The official encoder/decoder as a plain VAE: (encoder, decoder) Keras models."""
    import keras

    from tfssvae import distributions, networks

    model = config.model
    encoder = networks.conv_encoder(
        (64, 64, 1), distributions.DiagonalNormal.params_size(model.latent_dim), filters=tuple(model.filters),
        dense_units=model.dense_units, conv_initializer="he_normal", kernel_regularizer=l2, name="plain_encoder")
    z = keras.Input((model.latent_dim,))
    hidden = keras.layers.Dense(model.dense_units, activation="relu", kernel_regularizer=l2)(z)
    body = networks.deconv_decoder(model.dense_units, (64, 64, 1), filters=tuple(model.decoder_filters),
                                   conv_initializer="he_normal", kernel_regularizer=l2, name="plain_decoder")
    decoder = keras.Model(z, body(hidden))
    return encoder, decoder


def plain_step(encoder, decoder, optimizer, latent_dim):
    import tensorflow as tf

    from tfssvae import distributions
    from tfssvae.models.cascade_vae import standard_normal_kl

    posterior = distributions.DiagonalNormal(latent_dim)
    likelihood = distributions.Bernoulli((64, 64, 1))
    variables = encoder.trainable_variables + decoder.trainable_variables

    @tf.function
    def step(batch):
        x = batch["x"]
        with tf.GradientTape() as tape:
            q = posterior(encoder(x, training=True))
            mean, scale = q.mean(), q.stddev()
            z = mean + scale * tf.random.normal(tf.shape(mean))
            reconstruction = -likelihood(tf.cast(decoder(z), tf.float32)).log_prob(x)
            kl = tf.reduce_sum(standard_normal_kl(mean, scale), axis=1)
            loss = tf.reduce_mean(reconstruction + kl) + tf.add_n(encoder.losses + decoder.losses)
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    return step


def measure(precision, batches):
    """Median examples/s of the three step kinds at ``precision``; returns (dict, float32 model or None)."""
    import keras
    import tensorflow as tf

    from tfssvae import configs, fused, models, training

    training.set_precision(precision)
    try:
        config = configs.get("cascade_vae")
        model_args = {k: v for k, v in config.model.items() if k != "name"}
        l2 = keras.regularizers.L2(config.model.l2_weight)
        keras.utils.set_random_seed(FLAGS.seed)
        encoder, decoder = plain_vae(config, l2)
        optimizer = fused.Adam(config.learning_rate)
        optimizer.build(encoder.trainable_variables + decoder.trainable_variables)
        steps = {"plain_vae": plain_step(encoder, decoder, optimizer, config.model.latent_dim)}
        cascade = {}
        for kind, assign_start in (("warm_up", 10 ** 9), ("assignment", 0)):
            keras.utils.set_random_seed(FLAGS.seed)
            model = models.CascadeVAE((64, 64, 1), 3, **{**model_args, "assign_start": assign_start})
            model.compile(optimizer=fused.Adam(config.learning_rate))
            model.build_variables()
            cascade[kind] = model
            steps[kind] = tf.function(model.train_step)
        for name, step in steps.items():
            for i in range(FLAGS.warmup):
                step(batches[i % len(batches)])
        rates = {name: [] for name in steps}
        for _ in range(FLAGS.rounds):
            for name, step in steps.items():
                start = time.perf_counter()
                for i in range(FLAGS.steps):
                    out = step(batches[i % len(batches)])
                float(out if not isinstance(out, dict) else out["loss"])  # wait for the last step
                rates[name].append(FLAGS.steps * FLAGS.batch_size / (time.perf_counter() - start))
        medians = {name: statistics.median(r) for name, r in rates.items()}
        encoder_macs, decoder_macs = forward_macs(encoder), forward_macs(decoder)
        gradient_step = 3 * 2 * (encoder_macs + decoder_macs)  # forward, and twice that backward
        # The unaries: K decoder passes, forward only, sharing z's product with the first dense kernel;
        # one of them is the gradient pass's forward (networks.replay), counted in gradient_step.
        first_dense = config.model.latent_dim * config.model.dense_units
        flops = {"plain_vae": gradient_step, "warm_up": gradient_step,
                 "assignment": gradient_step + 2 * (config.model.discrete_size - 1) * (decoder_macs - first_dense)}
        rate = matmul_gflops(tf.bfloat16 if precision == "bfloat16" else tf.float32)
        result = {
            "examples_per_second": medians,
            "flops_per_example": flops,
            "matmul_gflops": rate,
            "ceiling_examples_per_second": {name: rate * 1e9 / f for name, f in flops.items()},
            "ratio_to_plain_vae": {name: medians[name] / medians["plain_vae"] for name in medians},
            "rounds": rates,
        }
        return result, cascade["assignment"] if precision == "float32" else None
    finally:
        training.set_precision("float32")


def main(argv):
    del argv
    import tensorflow as tf

    from tfssvae import configs, evaluation
    from tfssvae.data import sprites

    batches = [next(iter(sprites.sprites_dataset(FLAGS.batch_size, seed=FLAGS.seed + i, num_batches=1)))
               for i in range(FLAGS.batches)]
    batches = [{"x": b["x"]} for b in batches]
    summary = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
               "tensorflow": tf.__version__, "batch_size": FLAGS.batch_size, "steps": FLAGS.steps,
               "rounds": FLAGS.rounds, "precisions": {}}
    model = None
    for precision in FLAGS.precisions:
        summary["precisions"][precision], float32_model = measure(precision, batches)
        model = float32_model or model
    if FLAGS.metrics:
        config = configs.get("cascade_vae")
        if model is None:  # no float32 round: a fresh float32 model (the weights do not change the time)
            from tfssvae import models

            model = models.CascadeVAE((64, 64, 1), 3, **{k: v for k, v in config.model.items() if k != "name"})
        votes = tuple(int(v) for v in FLAGS.factor_vae_votes) if FLAGS.factor_vae_votes else \
            tuple(config.factor_vae_votes)
        eval_samples = FLAGS.eval_samples or config.eval_samples
        per_value = config.factor_vae_samples_per_value if FLAGS.samples_per_value is None \
            else FLAGS.samples_per_value
        start = time.perf_counter()
        report = evaluation.cascade_report(model, FLAGS.seed, eval_samples, votes, per_value)
        summary["metrics"] = {"seconds": time.perf_counter() - start, "eval_samples": eval_samples,
                              "factor_vae_votes": votes, "samples_per_value": per_value, "values": report}
    text = json.dumps(summary, indent=2)
    print(text)
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    app.run(main)
