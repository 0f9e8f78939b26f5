r"""Benchmark: milliseconds per M2 training step on one fixed batch, for A/B comparisons.

  python benchmarks/m2_step_time.py --precision=bfloat16 --fused_kernels=false
  python benchmarks/m2_step_time.py --repo=/tmp/old_checkout   # another checkout's tfssvae

The step of ``m2_speed.py`` (one hidden layer of 500, z of 50, 200 unlabelled + 100
labelled examples, Fashion-MNIST's 28 x 28) without the input pipeline: 20 steps per
``tf.function`` call, best of ``--repeats`` calls.  ``--fused_kernels=false`` swaps
``tfssvae.fused``'s softplus and Bernoulli kernels for plain TensorFlow ops and
``--optimizer=keras`` uses ``keras.optimizers.Adam``, so each change can be timed alone;
run the variants alternately, several times (the machines' speed drifts).
"""
import os
import sys
import time

import numpy as np
from absl import app, flags

flags.DEFINE_string("repo", os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "Checkout whose tfssvae is timed (an older one has no tfssvae.fused: plain ops, Keras Adam).")
flags.DEFINE_enum("precision", "float32", ["float32", "bfloat16"], "Keras precision policy.")
flags.DEFINE_boolean("fused_kernels", True, "Use tfssvae.fused's softplus and Bernoulli kernels.")
flags.DEFINE_enum("optimizer", "fused", ["fused", "keras"], "fused.Adam or keras.optimizers.Adam.")
flags.DEFINE_integer("repeats", 5, "Timed calls of 20 steps; the best is reported.")
FLAGS = flags.FLAGS

UNLABELLED, LABELLED, STEPS = 200, 100, 20


def main(argv):
    del argv
    sys.path.insert(0, FLAGS.repo)
    import keras
    import tensorflow as tf

    from tfssvae import models, training

    try:
        from tfssvae import fused
    except ImportError:  # a checkout from before the fused kernels
        fused = None
    if fused is not None and not FLAGS.fused_kernels:
        fused.softplus = lambda a: tf.cast(tf.nn.softplus(tf.cast(a, tf.float32)), a.dtype)
        fused.bernoulli_log_prob = lambda x, logits: x * logits - tf.nn.softplus(logits)
        if hasattr(fused, "bernoulli_log_prob_sum"):
            fused.bernoulli_log_prob_sum = lambda x, logits: tf.reduce_sum(
                x * tf.cast(logits, tf.float32) - tf.nn.softplus(tf.cast(logits, tf.float32)), axis=-1)
    training.set_precision(FLAGS.precision)
    keras.utils.set_random_seed(0)
    model = models.M2((28, 28, 1), 10, latent_dim=50, hidden_units=(500,), num_examples=55000, num_labelled=100)
    optimizer = fused.Adam(3e-4) if fused is not None and FLAGS.optimizer == "fused" else keras.optimizers.Adam(3e-4)
    model.compile(optimizer=optimizer)
    model.build_variables()
    rng = np.random.default_rng(0)
    size = UNLABELLED + LABELLED
    batch = {"x": tf.constant(rng.random((size, 28, 28, 1), np.float32)),
             "y": tf.constant(rng.integers(0, 10, size).astype(np.int32)),
             "y_mask": tf.constant(np.arange(size) >= UNLABELLED)}

    @tf.function
    def steps(n):
        for _ in tf.range(n):
            logs = model.train_step(batch)
        return logs["loss"]

    steps(tf.constant(3)).numpy()
    times = []
    for _ in range(FLAGS.repeats):
        start = time.perf_counter()
        steps(tf.constant(STEPS)).numpy()
        times.append((time.perf_counter() - start) / STEPS * 1000)
    print(f"repo={FLAGS.repo} precision={FLAGS.precision} fused_kernels={FLAGS.fused_kernels and fused is not None} "
          f"optimizer={FLAGS.optimizer if fused is not None else 'keras'}: {min(times):.1f} ms per step "
          f"(calls: {' '.join(f'{t:.1f}' for t in times)})")


if __name__ == "__main__":
    app.run(main)
