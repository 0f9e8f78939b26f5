r"""Benchmark: the ML-VAE table of benchmarks/RESULTS.md section 3 (issue 10).

  python benchmarks/mlvae_results.py --variant=fashion_mnist --seeds=0,1,2 \
      --results=benchmarks/results_issue10.jsonl
  python benchmarks/mlvae_results.py --variant= --seeds=0,1,2 --results=benchmarks/results_issue10.jsonl
  python benchmarks/mlvae_results.py --results=benchmarks/results_issue10.jsonl --table_only

Every system runs the preset ``tfssvae/configs/mlvae.py[:variant]`` (with ``--set`` changes),
one seed at a time, one process:

* ``product``, ``average``, ``geometric``: ``experiment.run`` with that ``model.group_method``
  (probes, test bound against group size, n-shot accuracy);
* ``held_out``: ``product`` with ``held_out_classes`` = ``--held_out`` (n-shot accuracy of the
  seen and of the unseen classes);
* ``plain_vae``: the reference, the package's M1 VAE with one latent of content_dim + style_dim
  dimensions and the same networks, trained on the same grouped batches (it ignores the
  groups) for as many steps at the same learning rate; its posterior mean is probed by
  ``evaluation.latent_probe_accuracy``, the probe and probe examples of the ML-VAE's.

A line per (variant, system, seed) is appended to ``--results`` as it finishes; a rerun skips
the lines already there with the same settings.  The table (mean +- s.d. over seeds) is
printed at the end.  ``--reevaluate`` trains nothing: it restores the ML-VAE runs of the
lines already there (their ``model_dir``) and replaces their figures with the current
``evaluation.mlvae_report``'s (e.g. after a change to the n-shot estimate).
"""
import json
import os
import sys
import time

from absl import app, flags, logging
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tfssvae import configs, evaluation, experiment, models, training  # noqa: E402
from tfssvae import data as data_lib  # noqa: E402

SYSTEMS = ("product", "average", "geometric", "held_out", "plain_vae")

flags.DEFINE_string("variant", "fashion_mnist", "Variant of tfssvae/configs/mlvae.py ('' for the digits base).")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
flags.DEFINE_list("systems", list(SYSTEMS), f"Some of {SYSTEMS}.")
flags.DEFINE_list("held_out", ["7", "8", "9"], "Classes held out of training by the held_out system.")
flags.DEFINE_multi_string("set", [], "Config changes as field=python-literal, e.g. --set=epochs=5.")
flags.DEFINE_string("work_dir", "/tmp/tfssvae_benchmarks/mlvae", "Model directories go here.")
flags.DEFINE_string("results", "benchmarks/results_issue10.jsonl", "One JSON line per run.")
flags.DEFINE_bool("table_only", False, "Print the table of --results and stop.")
flags.DEFINE_bool("reevaluate", False, "Re-evaluate the ML-VAE runs of --results' lines (of --variant, "
                  "--systems and --seeds) from their model directories; train nothing.")
FLAGS = flags.FLAGS


def changes():
    """``--set`` as a dict of dotted field -> value."""
    import ast

    parsed = {}
    for item in FLAGS.set:
        field, _, text = item.partition("=")
        try:
            parsed[field] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parsed[field] = text
    return parsed


def config_of(system, seed):
    spec = "mlvae" + (f":{FLAGS.variant}" if FLAGS.variant else "")
    settings = {**changes(), "seed": seed, "verbose": 0, "export": False}
    if system in ("product", "average", "geometric"):
        settings["model.group_method"] = system
    elif system == "held_out":
        settings["held_out_classes"] = tuple(int(c) for c in FLAGS.held_out)
    name = f"{FLAGS.variant or 'digits'}_{system}_seed{seed}"
    settings["model_dir"] = os.path.join(FLAGS.work_dir, name)
    return configs.get(spec, settings)


def plain_vae(config):
    """The M1 reference of ``config`` (an ML-VAE config): trained and probed; returns its figures."""
    source = data_lib.load_source(config.dataset, config.data_dir)
    batches = experiment.grouped_batches(config, source)
    model = models.M1(source.image_shape, source.num_classes,
                      latent_dim=config.model.content_dim + config.model.style_dim,
                      hidden_units=tuple(config.model.hidden_units), activation=config.model.activation,
                      likelihood=config.model.likelihood)
    import keras

    keras.utils.set_random_seed(config.seed)
    summary = training.train(model, batches, config.model_dir, training.TrainConfig(
        epochs=config.epochs, learning_rate=config.learning_rate, verbose=0, keep_best=False))
    return {"latent_probe_accuracy": evaluation.latent_probe_accuracy(model.encode, source, config.seed),
            "latent_dim": model.latent_dim, "steps": summary["steps"],
            "train_examples_per_second": summary["train_examples_per_second"]}


def settings_of(config):
    """What identifies a run in the results file: the whole config but where it is written."""
    return {k: v for k, v in config.to_dict().items() if k not in ("model_dir", "verbose")}


def table(rows):
    """Markdown: one row per (variant, system), mean +- s.d. over seeds."""
    def cell(values, scale=100.0, digits=1):
        values = np.asarray(values, float) * scale
        return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}" if len(values) > 1 \
            else f"{values.mean():.{digits}f}"

    lines = ["| data | system | seeds | content probe % | style probe % | plain-VAE probe % | "
             "bound, groups of 1 / 5 / 20 (nats) | n-shot 1 / 5 / 10 % | unseen n-shot 1 / 5 / 10 % |",
             "|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["variant"], r["system"]) for r in rows}, key=lambda k: (k[0], SYSTEMS.index(k[1])))
    for variant, system in keys:
        runs = [r for r in rows if (r["variant"], r["system"]) == (variant, system)]
        get = lambda *path: [_dig(r, path) for r in runs]  # noqa: E731
        data = variant or "digits"
        if system == "plain_vae":
            lines.append(f"| {data} | {system} | {len(runs)} | | | {cell(get('latent_probe_accuracy'))} | | | |")
            continue
        bound = " / ".join(cell(get("test_elbo_per_observation", s), 1.0) for s in ("1", "5", "20"))
        shots = " / ".join(cell(get("n_shot_accuracy" + ("_seen" if system == "held_out" else ""), n))
                           for n in ("1", "5", "10"))
        unseen = " / ".join(cell(get("n_shot_accuracy_unseen", n)) for n in ("1", "5", "10")) \
            if system == "held_out" else ""
        lines.append(f"| {data} | {system} | {len(runs)} | {cell(get('content_probe_accuracy'))} | "
                     f"{cell(get('style_probe_accuracy'))} | | {bound} | {shots} | {unseen} |")
    return "\n".join(lines)


def _dig(row, path):
    for key in path:
        row = row[key]
    return row


def reevaluate(rows):
    """Replaces the figures of the chosen ML-VAE lines by a new evaluation of their saved runs."""
    from tfssvae import export

    seeds = set(map(int, FLAGS.seeds))
    for row in rows:
        if row["variant"] != FLAGS.variant or row["system"] not in FLAGS.systems or row["seed"] not in seeds \
                or row["system"] == "plain_vae":
            continue
        config = config_of(row["system"], row["seed"])
        _, model = export.restore_run(config.model_dir)
        source = data_lib.load_source(config.dataset, config.data_dir)
        row.update(evaluation.mlvae_report(model, source, config.seed,
                                           held_out_classes=tuple(config.held_out_classes)))
        print(f"{FLAGS.variant or 'digits'} {row['system']} seed {row['seed']}: re-evaluated", flush=True)
    with open(FLAGS.results, "w") as f:
        f.writelines(json.dumps(row, default=str) + "\n" for row in rows)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    rows = []
    if os.path.exists(FLAGS.results):
        with open(FLAGS.results) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    if FLAGS.reevaluate:
        try:
            reevaluate(rows)
        except ValueError as error:
            print(f"mlvae_results: error: {error}", file=sys.stderr)
            sys.exit(2)
    elif not FLAGS.table_only:
        unknown = set(FLAGS.systems) - set(SYSTEMS)
        if unknown:
            print(f"mlvae_results: error: --systems: unknown {sorted(unknown)}; known {SYSTEMS}", file=sys.stderr)
            sys.exit(2)
        for seed in map(int, FLAGS.seeds):
            for system in FLAGS.systems:
                config = config_of(system, seed)
                settings = settings_of(config)
                if any(r["settings"] == json.loads(json.dumps(settings)) and r["system"] == system for r in rows):
                    continue
                start = time.time()
                try:
                    measured = plain_vae(config) if system == "plain_vae" else experiment.run(config)
                except ValueError as error:
                    print(f"mlvae_results: error: {error}", file=sys.stderr)
                    sys.exit(2)
                row = {"variant": FLAGS.variant, "system": system, "seed": seed, **measured,
                       "wall_seconds": time.time() - start, "settings": settings}
                rows.append(json.loads(json.dumps(row, default=str)))
                with open(FLAGS.results, "a") as f:
                    f.write(json.dumps(row, default=str) + "\n")
                print(f"{FLAGS.variant or 'digits'} {system} seed {seed}: {time.time() - start:.0f} s", flush=True)
    print(table(rows))


if __name__ == "__main__":
    app.run(main)
