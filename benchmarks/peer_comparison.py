r"""Benchmark: test error of the Pyro peer, M2, M1+M2, ssdgm_mnist and a labels-only baseline, side by side.

  python benchmarks/peer_comparison.py --dataset=fashion_mnist --labels=100 --seeds=0,1,2 \
      --peer=../shared/peers/pyro_m2.py --peer_python=/work/pyro_venv/bin/python

For every (labels, seed) each system trains on the same data with the same label count:
the peer (``pyro_m2.py``, run in its own virtual environment on an MNIST-format
directory; the embedded digits are written as one first), and tfssvae's M2, M1+M2 and
ssdgm_mnist from their config files (``--dataset=fashion_mnist`` picks each config's
``fashion_mnist`` variant), with the test error of the weights chosen on the validation
split.  The labels-only baseline is a logistic regression on the labelled images alone.
Each result is appended to ``--results`` as it arrives (a killed run keeps what it
finished; a rerun skips what is there) and the table, mean and spread over seeds, is printed.
"""
import gzip
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tfssvae import configs, data, experiment  # noqa: E402

flags.DEFINE_enum("dataset", "digits", ["digits", "fashion_mnist"], "The embedded digits or Fashion-MNIST.")
flags.DEFINE_list("labels", ["100"], "Numbers of labels.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (label split, initialisation, batch order).")
flags.DEFINE_list("systems", ["peer", "m2", "m1m2", "ssdgm_mnist", "logistic"], "Systems to run.")
flags.DEFINE_integer("epochs", 30, "Epochs of every system (M1+M2: of each stage).")
flags.DEFINE_float("learning_rate", None, "Adam step of the tfssvae systems (default: each config's); "
                   "RESULTS.md uses 2e-3 at 600 labels and 1e-3 from 1,000 on Fashion-MNIST.")
flags.DEFINE_enum("precision", "float32", ["float32", "bfloat16"], "Keras precision of the tfssvae systems.")
flags.DEFINE_string("peer", None, "Path of pyro_m2.py (needed for the 'peer' system).")
flags.DEFINE_string("peer_python", sys.executable, "Python of the peer's virtual environment.")
flags.DEFINE_string("work_dir", "/tmp/tfssvae_peer_comparison", "Model directories go here.")
flags.DEFINE_string("results", "benchmarks/peer_comparison.jsonl", "One JSON line per finished run.")
FLAGS = flags.FLAGS

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def write_idx(directory, source):
    """Writes a source as gzipped MNIST idx files (uint8 pixels) so the peer can read it."""
    os.makedirs(directory, exist_ok=True)
    for split, images, labels in (("train", source.train_images, source.train_labels),
                                  ("t10k", source.test_images, source.test_labels)):
        pixels = np.round(images[..., 0] * 255).astype(np.uint8)
        header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in pixels.shape)
        with gzip.open(os.path.join(directory, f"{split}-images-idx3-ubyte.gz"), "wb") as f:
            f.write(header + pixels.tobytes())
        header = bytes([0, 0, 8, 1]) + len(labels).to_bytes(4, "big")
        with gzip.open(os.path.join(directory, f"{split}-labels-idx1-ubyte.gz"), "wb") as f:
            f.write(header + np.asarray(labels, np.uint8).tobytes())
    return directory


def run_peer(directory, labels, seed):
    out = subprocess.run([FLAGS.peer_python, FLAGS.peer, directory, str(labels), str(FLAGS.epochs), str(seed)],
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"the peer failed ({out.returncode}): {out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"test_error": result["test_error"], "train_examples_per_second": result["examples_per_second"],
            "seconds": result["train_seconds"]}


def run_ours(system, labels, seed):
    spec = system if FLAGS.dataset == "digits" else f"{system}:fashion_mnist"
    suffix = "" if FLAGS.precision == "float32" else f"_{FLAGS.precision}"
    overrides = {"num_labels": labels, "seed": seed, "epochs": FLAGS.epochs, "export": False, "verbose": 0,
                 "precision": FLAGS.precision}
    if FLAGS.learning_rate is not None:
        suffix += f"_lr{FLAGS.learning_rate:g}"
        overrides["learning_rate"] = FLAGS.learning_rate
    overrides["model_dir"] = os.path.join(FLAGS.work_dir,
                                          f"{FLAGS.dataset}_{system}_{labels}_s{seed}_e{FLAGS.epochs}{suffix}")
    if system == "m1m2":
        overrides["m1_epochs"] = FLAGS.epochs
    config = configs.get(spec, overrides)
    result = experiment.run(config)
    return {"test_error": result["test_error"], "validation_error": result.get("validation_error"),
            "train_examples_per_second": result["train_examples_per_second"], "config": config.to_dict()}


def run_logistic(source, labels, seed):
    from sklearn.linear_model import LogisticRegression

    validation = min(5000, len(source.train_labels) // 10)
    train_idx, _ = data.validation_split(source.train_labels, validation, seed)
    images, train_labels = source.train_images[train_idx], source.train_labels[train_idx]
    chosen = data.balanced_labelled_indices(train_labels, labels, source.num_classes, seed)
    classifier = LogisticRegression(max_iter=2000).fit(images[chosen].reshape(labels, -1), train_labels[chosen])
    test = source.test_images.reshape(len(source.test_images), -1)
    return {"test_error": float(np.mean(classifier.predict(test) != source.test_labels))}


def table(rows):
    systems = [s for s in ("peer", "m2", "m1m2", "ssdgm_mnist", "logistic") if any(r["system"] == s for r in rows)]
    label_counts = sorted({r["labels"] for r in rows})
    lines = ["| system | " + " | ".join(f"{n} labels: error % (seeds)" for n in label_counts) + " |",
             "|---|" + "---|" * len(label_counts)]
    for system in systems:
        cells = []
        for n in label_counts:
            errors = [100 * r["test_error"] for r in rows if r["system"] == system and r["labels"] == n]
            if not errors:
                cells.append("")
            elif len(errors) == 1:
                cells.append(f"{errors[0]:.2f} (1)")
            else:
                cells.append(f"{np.mean(errors):.2f} ± {np.std(errors, ddof=1):.2f} ({len(errors)})")
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if FLAGS.learning_rate is not None and not FLAGS.learning_rate > 0:
        raise app.UsageError(f"--learning_rate: must be positive, received {FLAGS.learning_rate}")
    if "peer" in FLAGS.systems and (FLAGS.peer is None or not os.path.isfile(FLAGS.peer)):
        raise app.UsageError(f"--peer: the 'peer' system needs the path of pyro_m2.py; no such file {FLAGS.peer!r}")
    unknown = set(FLAGS.systems) - {"peer", "m2", "m1m2", "ssdgm_mnist", "logistic"}
    if unknown:
        raise app.UsageError(f"--systems: unknown {sorted(unknown)}")
    source = data.load_source("digits" if FLAGS.dataset == "digits" else f"idx:{FASHION_DIR}")
    peer_dir = FASHION_DIR
    if FLAGS.dataset == "digits" and "peer" in FLAGS.systems:
        peer_dir = write_idx(os.path.join(tempfile.mkdtemp(), "digits_idx"), source)
    rows = []
    if os.path.exists(FLAGS.results):
        with open(FLAGS.results) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    for labels in map(int, FLAGS.labels):
        for seed in map(int, FLAGS.seeds):
            for system in FLAGS.systems:
                key = (FLAGS.dataset, system, labels, seed, FLAGS.epochs)
                if any((r["dataset"], r["system"], r["labels"], r["seed"], r["epochs"]) == key for r in rows):
                    continue
                if system == "peer":
                    result = run_peer(peer_dir, labels, seed)
                elif system == "logistic":
                    result = run_logistic(source, labels, seed)
                else:
                    result = run_ours(system, labels, seed)
                row = dict(zip(("dataset", "system", "labels", "seed", "epochs"), key), **result)
                rows.append(row)
                with open(FLAGS.results, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{FLAGS.dataset} {system} {labels} labels seed {seed}: "
                      f"test error {100 * result['test_error']:.2f} %", flush=True)
    print(table([r for r in rows if r["dataset"] == FLAGS.dataset and r["epochs"] == FLAGS.epochs]))


if __name__ == "__main__":
    app.run(main)
