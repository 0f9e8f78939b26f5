r"""Baseline of the multi-digit experiment: a CNN counting digits from the labelled canvases alone.

  python benchmarks/multi_digit_baseline.py --count_supervision=0.1 --seed=0 \
      --results=benchmarks/results_multi_digit_baseline.jsonl

Trains ``tfssvae.count_baseline``'s small CNN on exactly the canvases whose count a
multi-digit run with the same ``count_supervision`` and ``seed`` observes (the run's
config, ``tfssvae/configs/multi_digit.py``, and ``experiment.multi_digit_canvases``),
chooses its epoch on the run's validation canvases and prints one JSON line: test count
accuracy on the run's test canvases, labelled canvases, seconds.  ``--results`` appends
the same line to a JSON-lines file.
"""
import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tfssvae import configs, count_baseline  # noqa: E402

flags.DEFINE_float("count_supervision", 0.1, "Fraction of the training canvases whose count is observed.")
flags.DEFINE_integer("seed", 0, "Seed of the run whose canvases are used (canvases, labelled choice, weights).")
flags.DEFINE_string("variant", None, "Variant of the multi_digit config (e.g. 'tiny' for a smoke run).")
flags.DEFINE_integer("epochs", None, f"Most epochs (default {count_baseline.DEFAULTS['epochs']}).")
flags.DEFINE_integer("patience", None, f"Epochs without a better validation accuracy before stopping "
                     f"(default {count_baseline.DEFAULTS['patience']}).")
flags.DEFINE_list("filters", None, f"Filters of the 3x3 stride-2 convs (default "
                  f"{','.join(map(str, count_baseline.DEFAULTS['filters']))}); 'none': no conv, an MLP.")
flags.DEFINE_integer("dense_units", None, f"Width of the hidden dense layer (default "
                     f"{count_baseline.DEFAULTS['dense_units']}).")
flags.DEFINE_string("results", None, "Optional JSON-lines file the result is appended to.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    name = "multi_digit" + (f":{FLAGS.variant}" if FLAGS.variant else "")
    config = configs.get(name, {"count_supervision": FLAGS.count_supervision, "seed": FLAGS.seed})
    settings = {key: value for key, value in (("epochs", FLAGS.epochs), ("patience", FLAGS.patience),
                                              ("dense_units", FLAGS.dense_units)) if value is not None}
    if FLAGS.filters is not None:
        try:
            settings["filters"] = () if FLAGS.filters == ["none"] else tuple(int(f) for f in FLAGS.filters)
        except ValueError:
            print(f"multi_digit_baseline: error: --filters: expected integers or 'none', received "
                  f"{','.join(FLAGS.filters)}", file=sys.stderr)
            sys.exit(2)
    try:
        results = count_baseline.run(config, **settings)
    except ValueError as error:
        print(f"multi_digit_baseline: error: {error}", file=sys.stderr)
        sys.exit(2)
    line = json.dumps({"benchmark": "multi_digit_count_baseline", "config": name, **results})
    print(line)
    if FLAGS.results:
        with open(FLAGS.results, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    app.run(main)
