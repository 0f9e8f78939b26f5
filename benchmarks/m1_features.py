r"""Diagnostic: is M1's code a better input than the pixels for a classifier on few labels?

  python benchmarks/m1_features.py --model_dir=/tmp/run_m1m2 --dataset=idx:/usr/share/datasets/fashion-mnist

M1+M2 can only beat M2 where M1's posterior means separate the classes better than the
pixels do (Kingma et al.'s premise, true of MNIST).  This reads the M1 of a training run
(an ``m1m2`` run's M1 stage, ``MODEL_DIR/m1``, or an ``m1`` run), encodes the training and
test images, and fits a logistic regression and a 1-nearest-neighbour classifier on the
same class-balanced labelled examples as the semi-supervised runs (after the same
validation hold-out), on the pixels, on their principal components (as many as M1 has
active dimensions: a linear code of the same size), and on M1's code (all dimensions, and
the active ones: posterior-mean s.d. above the model's ``active_threshold``).  Prints the
test errors per seed, and M1's number of active dimensions.
"""
import json
import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tensorflow as tf  # noqa: E402

from tfssvae import data, models  # noqa: E402

flags.DEFINE_string("model_dir", None, "A training run of model m1m2 (its M1 stage) or m1.")
flags.DEFINE_string("dataset", "idx:/usr/share/datasets/fashion-mnist", "The run's data source.")
flags.DEFINE_integer("num_labels", 100, "Labelled examples the classifiers see.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Label splits (the runs' seeds).")
flags.mark_flag_as_required("model_dir")
FLAGS = flags.FLAGS


def load_m1(model_dir):
    """The M1 of a run directory, with its latest M1 checkpoint; returns (m1, active threshold)."""
    path = os.path.join(model_dir, "model.json")
    if not os.path.exists(path):
        raise app.UsageError(f"--model_dir: {model_dir} has no model.json")
    with open(path) as f:
        run = json.load(f)
    if run["model"] not in ("m1m2", "m1"):
        raise app.UsageError(f"--model_dir: expected an m1m2 or m1 run, found {run['model']!r}")
    model = models.model_class(run["model"])(**run["config"])
    model.build_variables()
    m1 = model.m1 if run["model"] == "m1m2" else model
    directory = os.path.join(model_dir, "m1", "checkpoints") if run["model"] == "m1m2" else \
        os.path.join(model_dir, "checkpoints")
    latest = tf.train.latest_checkpoint(directory)
    if latest is None:
        raise app.UsageError(f"--model_dir: no M1 checkpoint in {directory}")
    tf.train.Checkpoint(model=m1).restore(latest).expect_partial()
    return m1, run["config"].get("active_threshold", 0.1)


def main(argv):
    del argv
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    m1, threshold = load_m1(FLAGS.model_dir)
    source = data.load_source(FLAGS.dataset)
    validation = min(5000, len(source.train_labels) // 10)

    def code(images):
        return np.concatenate([m1.encode(images[i:i + 2000])["mean"].numpy() for i in range(0, len(images), 2000)])

    print("| seed | input | logistic regression error % | 1-NN error % |\n|---|---|---|---|")
    for seed in map(int, FLAGS.seeds):
        # The same hold-out and labelled examples as a run with this seed.
        train_idx, _ = data.validation_split(source.train_labels, validation, seed)
        images, labels = source.train_images[train_idx], source.train_labels[train_idx]
        chosen = data.balanced_labelled_indices(labels, FLAGS.num_labels, source.num_classes, seed)
        train_code, test_code = code(images), code(source.test_images)
        active = train_code.std(axis=0) > threshold
        pixels = images.reshape(len(images), -1), source.test_images.reshape(len(source.test_images), -1)
        pca = PCA(max(1, int(active.sum())), random_state=0).fit(pixels[0])
        inputs = {"pixels": pixels,
                  f"pixels' first {pca.n_components_} principal components": tuple(map(pca.transform, pixels)),
                  f"M1 code, {train_code.shape[1]} dims": (train_code, test_code),
                  f"M1 code, {active.sum()} active dims": (train_code[:, active], test_code[:, active])}
        for name, (train, test) in inputs.items():
            errors = []
            for classifier in (LogisticRegression(max_iter=3000), KNeighborsClassifier(1)):
                classifier.fit(train[chosen], labels[chosen])
                errors.append(100 * np.mean(classifier.predict(test) != source.test_labels))
            print(f"| {seed} | {name} | {errors[0]:.2f} | {errors[1]:.2f} |")


if __name__ == "__main__":
    app.run(main)
