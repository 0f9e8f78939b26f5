r"""Baseline: logistic regression on the N labelled examples alone (no unlabelled data).

  python benchmarks/supervised_baseline.py --dataset=idx:/usr/share/datasets/fashion-mnist

Uses the same validation hold-out and class-balanced label choice as the semi-supervised runs.
"""
import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tfssvae import data  # noqa: E402

flags.DEFINE_string("dataset", "idx:/usr/share/datasets/fashion-mnist", "Data source spec.")
flags.DEFINE_list("labels", ["100", "600", "1000", "3000"], "Numbers of labels.")
flags.DEFINE_integer("seed", 0, "Seed of the label split (as the semi-supervised runs).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from sklearn.linear_model import LogisticRegression

    source = data.load_source(FLAGS.dataset)
    validation = min(5000, len(source.train_labels) // 10)
    train_idx, _ = data.validation_split(source.train_labels, validation, FLAGS.seed)
    images, labels = source.train_images[train_idx], source.train_labels[train_idx]
    test = source.test_images.reshape(len(source.test_images), -1)
    print("| labels | logistic regression test error % |\n|---|---|")
    for n in map(int, FLAGS.labels):
        chosen = data.balanced_labelled_indices(labels, n, source.num_classes, FLAGS.seed)
        classifier = LogisticRegression(max_iter=2000).fit(images[chosen].reshape(n, -1), labels[chosen])
        print(f"| {n} | {100 * np.mean(classifier.predict(test) != source.test_labels):.2f} |")


if __name__ == "__main__":
    app.run(main)
