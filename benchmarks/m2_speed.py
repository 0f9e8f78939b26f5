r"""Benchmark: M2 training examples/s against the Pyro peer, with the machine's ceiling beside it.

  python benchmarks/m2_speed.py --dataset=idx:/usr/share/datasets/fashion-mnist \
      --peer=../shared/peers/pyro_m2.py --peer_python=/work/pyro_venv/bin/python

One process measures, back to back on the same cores: the peer (one epoch, its own
examples/s: every example through the objective, 200 unlabelled + 100 labelled per
iteration), then tfssvae M2 in float32 and in bfloat16 with the same networks (one hidden
layer of 500 softplus units, z of 50) and the same batch composition, through the one
training loop (input pipeline included).  The machines are shared and their speed drifts by
tens of percent over minutes, so this repeats for ``--rounds`` rounds and reports each
round's ratios (peer and ours measured within the same minute) and their median.  Beside them: FLOPs per training example
(matmuls only, forward and backward = 3x forward) and this machine's measured matmul rate
in float32 and bfloat16, so "examples/s at the ceiling" = rate / FLOPs per example.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfssvae import data, models, training  # noqa: E402
from benchmarks.ceiling import matmul_gflops  # noqa: E402

flags.DEFINE_string("dataset", "idx:/usr/share/datasets/fashion-mnist", "Data source spec (MNIST format for the peer).")
flags.DEFINE_string("peer", None, "Path of pyro_m2.py; the peer is skipped when not given.")
flags.DEFINE_string("peer_python", sys.executable, "Python of the peer's virtual environment.")
flags.DEFINE_integer("num_labels", 100, "Labelled examples.")
flags.DEFINE_integer("unlabelled_batch_size", 200, "Unlabelled examples per step (the peer's batch).")
flags.DEFINE_integer("labelled_batch_size", 100, "Labelled examples per step (the peer's, with 100 labels).")
flags.DEFINE_integer("epochs", 1, "Epochs timed per system.")
flags.DEFINE_integer("steps_per_call", 10, "Training steps per tf.function call.")
flags.DEFINE_list("precisions", ["float32", "bfloat16"], "Precisions of the tfssvae runs.")
flags.DEFINE_integer("rounds", 3, "Rounds of (peer, then each precision); ratios are per round, then the median.")
FLAGS = flags.FLAGS

HIDDEN, LATENT = 500, 50


def flops_per_example(pixels, num_classes, unlabelled, labelled):
    """Matmul FLOPs of one training step of M2 per example (forward x 3 for the backward pass)."""
    classifier = pixels * HIDDEN + HIDDEN * num_classes
    trunk = pixels * HIDDEN
    row = num_classes * HIDDEN + HIDDEN * 2 * LATENT + (num_classes + LATENT) * HIDDEN + HIDDEN * pixels
    macs = (unlabelled * (classifier + trunk + num_classes * row) + labelled * (classifier + trunk + row))
    return 3 * 2 * macs / (unlabelled + labelled)


def run_peer(directory):
    out = subprocess.run([FLAGS.peer_python, FLAGS.peer, directory, str(FLAGS.num_labels), str(FLAGS.epochs), "0"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_ours(source, precision):
    training.set_precision(precision)
    try:
        keras.utils.set_random_seed(0)
        labelled = data.balanced_labelled_indices(source.train_labels, FLAGS.num_labels, source.num_classes, 0)
        batch_size = FLAGS.unlabelled_batch_size + FLAGS.labelled_batch_size
        batches = data.SemiSupervisedSource(source.train_images, source.train_labels, labelled, batch_size,
                                            FLAGS.labelled_batch_size, seed=0)
        model = models.M2(source.image_shape, source.num_classes, latent_dim=LATENT, hidden_units=(HIDDEN,),
                          num_examples=len(source.train_images), num_labelled=FLAGS.num_labels)
        config = training.TrainConfig(epochs=FLAGS.epochs, steps_per_call=FLAGS.steps_per_call, verbose=0,
                                      checkpoint_every=10 ** 9, keep_best=False)
        with tempfile.TemporaryDirectory() as model_dir:
            summary = training.train(model, batches, model_dir, config)
        return summary["train_examples_per_second"]
    finally:
        training.set_precision("float32")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if FLAGS.peer is not None and not os.path.isfile(FLAGS.peer):
        raise app.UsageError(f"--peer: no such file {FLAGS.peer!r}")
    if FLAGS.peer is not None and not FLAGS.dataset.startswith("idx:"):
        raise app.UsageError(f"--dataset: the peer reads MNIST-format directories ('idx:DIR'), received {FLAGS.dataset!r}")
    if FLAGS.rounds < 1:
        raise app.UsageError(f"--rounds: expected at least 1, received {FLAGS.rounds}")
    source = data.load_source(FLAGS.dataset)
    pixels = int(np.prod(source.image_shape))
    flops = flops_per_example(pixels, source.num_classes, FLAGS.unlabelled_batch_size, FLAGS.labelled_batch_size)
    rates = {"float32": matmul_gflops(tf.float32), "bfloat16": matmul_gflops(tf.bfloat16)}
    results = {"flops_per_example": flops, "matmul_gflops": rates, "dataset": FLAGS.dataset,
               "cores": os.cpu_count(), "epochs": FLAGS.epochs, "rounds": []}
    for _ in range(FLAGS.rounds):
        measured = {"peer": run_peer(FLAGS.dataset[len("idx:"):])["examples_per_second"]} if FLAGS.peer else {}
        for precision in FLAGS.precisions:
            measured[precision] = run_ours(source, precision)
        results["rounds"].append(measured)
        logging.warning("round %d: %s", len(results["rounds"]), measured)
    print(json.dumps(results))
    median = {name: float(np.median([r[name] for r in results["rounds"]])) for name in results["rounds"][0]}
    print("| system | train examples/s (median) | vs peer, per round | median | ceiling (matmul rate / FLOPs per example) |")
    print("|---|---|---|---|---|")
    if FLAGS.peer:
        print(f"| Pyro M2 (peer) | {median['peer']:.0f} | | 1.00x | |")
    for precision in FLAGS.precisions:
        ratios = [r[precision] / r["peer"] for r in results["rounds"]] if FLAGS.peer else []
        per_round = " / ".join(f"{ratio:.2f}x" for ratio in ratios)
        middle = f"{np.median(ratios):.2f}x" if ratios else ""
        print(f"| tfssvae M2, {precision} | {median[precision]:.0f} | {per_round} | {middle} | "
              f"{rates[precision] * 1e9 / flops:.0f} ({rates[precision]:.0f} GFLOP/s / {flops / 1e6:.1f} MFLOP) |")


if __name__ == "__main__":
    app.run(main)
