r"""Benchmark: M2 and M1+M2 test error and training speed against the number of labels.

  python benchmarks/semi_supervised.py --dataset=idx:/usr/share/datasets/fashion-mnist \
      --labels=100,600,1000,3000 --epochs=10 --m1_epochs=10

Each (model, labels) pair is one ``tfssvae.experiment.run`` of the model's package config
(``tfssvae/configs/<model>.py``) with these flags' values; its metrics are appended
to ``--results_json`` as they arrive (a killed benchmark keeps what it finished, and a
rerun skips pairs already there), and the table is printed for benchmarks/RESULTS.md.
"""
import json
import os
import platform
import sys

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tfssvae import configs, experiment  # noqa: E402

flags.DEFINE_string("dataset", "idx:/usr/share/datasets/fashion-mnist", "Data source spec.")
flags.DEFINE_list("labels", ["100", "600", "1000", "3000"], "Numbers of labels.")
flags.DEFINE_list("models", ["m2", "m1m2"], "Models to run.")
flags.DEFINE_integer("epochs", 10, "Epochs (M2 stage for M1+M2).")
flags.DEFINE_integer("m1_epochs", 10, "Epochs of the M1 stage of M1+M2.")
flags.DEFINE_integer("batch_size", 200, "Batch size.")
flags.DEFINE_integer("labelled_batch_size", 100, "Labelled examples per batch.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_list("hidden_units", ["500"], "Hidden widths.")
flags.DEFINE_integer("latent_dim", 50, "Latent size (M1+M2: of both stages).")
flags.DEFINE_bool("jit_compile", False, "XLA.")
flags.DEFINE_enum("precision", "float32", ["float32", "bfloat16"], "Compute precision (config field precision).")
flags.DEFINE_integer("steps_per_call", None, "Training steps per tf.function call; default: the model's config.")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_string("work_dir", "/tmp/tfssvae_benchmarks", "Model directories go here.")
flags.DEFINE_string("results_json", "benchmarks/semi_supervised_results.json", "Results, one per run.")
FLAGS = flags.FLAGS


def table(rows):
    lines = ["| model | labels | epochs | test error % | train examples/s | device |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        epochs = f"{r['m1_epochs']}+{r['epochs']}" if r["model"] == "m1m2" else str(r["epochs"])
        lines.append(f"| {r['model']} | {r['num_labels']} | {epochs} | {100 * r['test_error']:.2f} | "
                     f"{r['train_examples_per_second']:.0f} | {r['device']} |")
    return "\n".join(lines)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    rows = []
    if os.path.exists(FLAGS.results_json):
        with open(FLAGS.results_json) as f:
            rows = json.load(f)
    for model in FLAGS.models:
        for labels in map(int, FLAGS.labels):
            key = (model, labels, FLAGS.dataset, FLAGS.epochs)
            if any((r["model"], r["num_labels"], r["dataset"], r["epochs"]) == key for r in rows):
                continue
            config = configs.get(model, {
                "dataset": FLAGS.dataset, "num_labels": labels, "epochs": FLAGS.epochs,
                "batch_size": FLAGS.batch_size, "labelled_batch_size": FLAGS.labelled_batch_size,
                "learning_rate": FLAGS.learning_rate, "jit_compile": FLAGS.jit_compile, "seed": FLAGS.seed,
                "precision": FLAGS.precision, "export": False, "verbose": 0,
                "model_dir": os.path.join(FLAGS.work_dir, f"{model}_{labels}_e{FLAGS.epochs}_s{FLAGS.seed}"),
                "model.hidden_units": tuple(map(int, FLAGS.hidden_units)),
            })
            for key in ("latent_dim", "m1_latent_dim", "m2_latent_dim"):
                if key in config.model:
                    config.model[key] = FLAGS.latent_dim
            if FLAGS.steps_per_call is not None:
                config.steps_per_call = FLAGS.steps_per_call
            if "m1_epochs" in config:
                config.m1_epochs = FLAGS.m1_epochs
            result = experiment.run(config)
            result.update(m1_epochs=FLAGS.m1_epochs, machine=platform.processor() or platform.machine(),
                          config=config.to_dict())
            rows.append(result)
            with open(FLAGS.results_json, "w") as f:
                json.dump(rows, f, indent=2)
            print(f"{model} {labels} labels: test error {100 * result['test_error']:.2f} %, "
                  f"{result['train_examples_per_second']:.0f} examples/s", flush=True)
    print(table(rows))


if __name__ == "__main__":
    app.run(main)
