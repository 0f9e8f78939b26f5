r"""Load test of an exported SavedModel's ``serving_default`` (issue 14).

  python benchmarks/serve_load.py                                  # a small M2, trained here
  python benchmarks/serve_load.py --saved_model=saved_models/m2/1  # any tfssvae export
  python benchmarks/serve_load.py --saved_model=saved_models/m2    # its newest version

Loads the SavedModel with ``tf.saved_model.load`` (what TF Serving's Predict runs, minus
the RPC), then sends ``--requests`` requests of each batch size in ``--batch_sizes`` from
``--threads`` Python threads and reports the latency percentiles (p50, p99) and requests/s.
Each request's inputs come from a pool of distinct valid inputs (``export.warmup_inputs``
with a different seed each: images in [0, 1], labels in range, unit lights), built from
the input specs the export records, so any model family can be loaded.

Every answer is checked against a single-threaded run on the same input, exactly (bit for
bit): the same graph on the same input shapes runs the same kernels with the same
partitioning, whatever the other threads do, so concurrency must not change a single bit;
a difference would mean shared state between requests.  Any error or difference makes the
script exit with status 1.

Without ``--saved_model`` it trains the M2 of ``tfssvae/configs/m2.py`` (one hidden layer
of 500, z of 50) for ``--train_steps`` steps on the embedded digits and exports it to a
temporary directory: the serving cost does not depend on how well the model is trained.
"""
import concurrent.futures
import json
import os
import sys
import tempfile
import threading
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tfssvae import export as export_lib  # noqa: E402  (after the path: this checkout's tfssvae)

flags.DEFINE_string("saved_model", None, "A SavedModel version directory (or a base holding numbered versions); "
                                         "default: train and export a small M2 on the digits.")
flags.DEFINE_integer("requests", 10000, "Requests per batch size.")
flags.DEFINE_list("batch_sizes", ["1", "64"], "Batch sizes, one load test each.")
flags.DEFINE_integer("threads", 8, "Client threads sending requests at once.")
flags.DEFINE_integer("pool", 256, "Distinct inputs per batch size (requests cycle through them).")
flags.DEFINE_integer("train_steps", 20, "Training steps of the default M2.")
flags.DEFINE_string("output", None, "Optional JSON file for the figures.")
FLAGS = flags.FLAGS


def positive(name, value):
    if value < 1:
        raise ValueError(f"--{name}: expected a positive integer, received {value}")
    return value


def resolve_saved_model(path):
    """The version directory ``path`` names: itself, or the newest numbered version under it."""
    if not os.path.exists(path):
        raise ValueError(f"--saved_model: {path} does not exist; give an export such as saved_models/m2/1")
    if not os.path.isdir(path):
        raise ValueError(f"--saved_model: {path} is not a directory; give an export such as saved_models/m2/1")
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = sorted(int(name) for name in os.listdir(path)
                      if name.isdigit() and os.path.isfile(os.path.join(path, name, "saved_model.pb")))
    if not versions:
        raise ValueError(f"--saved_model: {path} holds neither saved_model.pb nor numbered versions with one")
    return os.path.join(path, str(versions[-1]))


def train_default_m2(directory, steps):
    """Exports a small M2 trained ``steps`` steps on the embedded digits to ``directory``/m2."""
    import keras

    from tfssvae import configs, experiment
    from tfssvae import data as data_lib

    keras.utils.set_random_seed(0)
    config = configs.get("m2", {"dataset": "digits"})
    source = data_lib.load_source("digits")
    images, labels = source.train_images, source.train_labels
    model = experiment.build_model(config, images.shape[1:], source.num_classes, num_examples=len(images))
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    model.build_variables()
    rng = np.random.default_rng(0)
    batch = 100
    # Half of each batch labelled, as the semi-supervised batches mix them.
    mask = np.arange(batch) < batch // 2
    step = tf.function(model.train_step)
    for _ in range(steps):
        index = rng.choice(len(images), batch, replace=False)
        logs = step({"x": tf.constant(images[index]), "y": tf.constant(labels[index]), "y_mask": tf.constant(mask)})
    print(f"trained M2 for {steps} steps on the digits (last loss {float(logs['loss']):.2f})")
    return export_lib.export(model, os.path.join(directory, "m2"))


def percentile_ms(latencies, q):
    return float(np.percentile(latencies, q) * 1e3)


def load_test(serve, pool, expected, requests, threads):
    """Sends ``requests`` requests (request i gets ``pool[i % len(pool)]``) from ``threads``
    threads; returns the figures and the number of errors and of answers that differ from
    ``expected`` (the single-threaded answers, in pool order)."""
    latencies = np.zeros(requests)
    errors, differences = [], []
    lock = threading.Lock()

    def worker(first):
        for i in range(first, requests, threads):
            inputs = pool[i % len(pool)]
            start = time.perf_counter()
            try:
                answer = {name: value.numpy() for name, value in serve(**inputs).items()}
            except Exception as error:  # counted and reported, never hidden
                with lock:
                    errors.append(f"request {i}: {type(error).__name__}: {str(error)[:200]}")
                continue
            latencies[i] = time.perf_counter() - start
            want = expected[i % len(pool)]
            if answer.keys() != want.keys() or not all(
                    answer[k].dtype == want[k].dtype and np.array_equal(answer[k], want[k]) for k in want):
                with lock:
                    differences.append(i)

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as executor:
        for future in [executor.submit(worker, t) for t in range(threads)]:
            future.result()
    wall = time.perf_counter() - start
    served = latencies[latencies > 0]
    return {"requests": requests, "threads": threads, "seconds": wall, "requests_per_second": requests / wall,
            "examples_per_second": requests * len(next(iter(pool[0].values()))) / wall,
            "p50_ms": percentile_ms(served, 50) if len(served) else None,
            "p99_ms": percentile_ms(served, 99) if len(served) else None,
            "errors": len(errors), "first_errors": errors[:3], "different_answers": len(differences)}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        requests = positive("requests", FLAGS.requests)
        threads = positive("threads", FLAGS.threads)
        pool_size = positive("pool", FLAGS.pool)
        train_steps = positive("train_steps", FLAGS.train_steps)
        try:
            batch_sizes = [positive("batch_sizes", int(b)) for b in FLAGS.batch_sizes]
        except ValueError as error:
            raise ValueError(f"--batch_sizes: expected positive integers, received {FLAGS.batch_sizes} ({error})")
        saved_model = resolve_saved_model(FLAGS.saved_model) if FLAGS.saved_model else None
        if saved_model is not None and "serving_default" not in export_lib.serving_inputs(saved_model):
            raise ValueError(f"--saved_model: {saved_model} records no serving_default inputs")
    except ValueError as error:
        print(f"serve_load: {error}", file=sys.stderr)
        return 2

    temporary = None
    if saved_model is None:
        temporary = tempfile.TemporaryDirectory(prefix="serve_load-")
        saved_model = train_default_m2(temporary.name, train_steps)
    specs = export_lib.serving_inputs(saved_model)["serving_default"]
    serve = tf.saved_model.load(saved_model).signatures["serving_default"]
    print(f"SavedModel {saved_model}; serving_default inputs "
          + ", ".join(f"{name} {spec['dtype']} {spec['shape']}" for name, spec in specs.items())
          + f"; TensorFlow {tf.__version__}, intra-op threads {tf.config.threading.get_intra_op_parallelism_threads()}"
          + f" (0: one a core), {os.cpu_count()} cores")

    results, failed = [], False
    for batch_size in batch_sizes:
        pool = [{name: tf.constant(value) for name, value in
                 export_lib.warmup_inputs(specs, batch_size=batch_size, seed=1000 * batch_size + i).items()}
                for i in range(min(pool_size, requests))]
        # A first call for this batch size pays for the graph's set-up (what TF Serving's
        # warm-up replay pays at load time); then the single-threaded reference, one call
        # per distinct input.
        serve(**pool[0])
        start = time.perf_counter()
        expected = [{name: value.numpy() for name, value in serve(**inputs).items()} for inputs in pool]
        single = (time.perf_counter() - start) / len(pool)
        figures = {"batch_size": batch_size, "single_thread_ms_per_request": single * 1e3,
                   **load_test(serve, pool, expected, requests, threads)}
        results.append(figures)
        failed |= figures["errors"] > 0 or figures["different_answers"] > 0
        print(f"batch {batch_size:>4}: {requests} requests from {threads} threads in {figures['seconds']:.1f} s: "
              f"{figures['requests_per_second']:.0f} requests/s ({figures['examples_per_second']:.0f} examples/s), "
              f"latency p50 {figures['p50_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms; single-threaded "
              f"{figures['single_thread_ms_per_request']:.2f} ms a request; errors {figures['errors']}, answers "
              f"different from the single-threaded run {figures['different_answers']} (exact comparison)")
        for line in figures["first_errors"]:
            print("  " + line)
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump({"saved_model": FLAGS.saved_model or "default M2 (digits)", "results": results}, f, indent=2)
    if temporary is not None:
        temporary.cleanup()
    print("FAILED: errors or answers that differ" if failed else "OK: no error; every answer equals the "
          "single-threaded run's, bit for bit")
    return 1 if failed else 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
