"""tf.distribute in the one training loop (issue 14): replicas, workers, checkpoints, bad settings.

The distributed runs happen in subprocesses (this file run as a script): splitting the CPU
into two logical devices, and MultiWorkerMirroredStrategy's collective set-up, must happen
before TensorFlow initialises and would change the process for every later test.

* ``python tests/test_distribute.py mirrored``: two logical CPU devices; for M2, ML-VAE and
  CascadeVAE one training step (SGD, learning rate 1, so the weights move by minus the
  gradient) on one device and under ``MirroredStrategy`` on both, from the same weights and
  the same global batch; prints the largest differences of loss and weights as JSON, and
  the errors of the bad shares.
* ``python tests/test_distribute.py worker OUT``: one worker of a two-worker
  ``MultiWorkerMirroredStrategy`` run (``TF_CONFIG`` set by the test) of the whole
  experiment (M2 on the digits, a tiny network, one epoch); saves its final weights to
  ``OUT/worker<i>.npz``.
"""
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
#: Subprocess environment: this checkout's package, quiet TensorFlow, CPU only, one thread a
#: process (the two workers share two busy cores).
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "TF_NUM_INTRAOP_THREADS": "1",
       "TF_NUM_INTEROP_THREADS": "2"}
ENV.pop("TF_CONFIG", None)

#: The two-worker run: M2 on the embedded digits, tiny, one epoch (12 steps) of a global batch of 200.
WORKER_RUN = {"dataset": "digits", "num_labels": 100, "epochs": 1, "batch_size": 200, "validation_size": 100,
              "model.hidden_units": (16,), "model.latent_dim": 3, "verbose": 0, "keep_best": False,
              "checkpoint_every": 10, "strategy": "multi_worker"}


# ----------------------------------------------------------------------------- subprocess side

def _deterministic_sampling():
    """Every Normal sample becomes loc + scale * sin(997 loc + 1) (a fixed function of the
    example's own parameters), so one device and two replicas draw the same noise for the
    same example; TensorFlow's random ops are seeded per device and would not."""
    import tensorflow as tf
    import tensorflow_probability as tfp

    def sample_n(self, n, seed=None):
        loc = tf.convert_to_tensor(self.loc)
        scale = tf.convert_to_tensor(self.scale)
        value = loc + scale * tf.stop_gradient(tf.sin(997.0 * loc + 1.0))
        return tf.broadcast_to(value, tf.concat([[n], tf.shape(value)], axis=0))

    tfp.distributions.Normal._sample_n = sample_n


class _OneBatch:
    """A batch source of one step: the same global batch dict every epoch."""

    def __init__(self, batch, groups_per_batch=None, group_size=None):
        self.batch = batch
        self.steps_per_epoch = 1
        self.examples_per_step = len(batch["x"])
        if groups_per_batch is not None:
            self.groups_per_batch, self.group_size = groups_per_batch, group_size

    def epoch(self, epoch, skip_steps=0):
        import tensorflow as tf

        return tf.data.Dataset.from_tensors(self.batch).skip(skip_steps)


def _mirrored_main():
    import tempfile

    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    from tfssvae import models, training

    _deterministic_sampling()
    strategy = training.make_strategy("mirrored")
    rng = np.random.default_rng(0)
    digits = rng.uniform(size=(8, 8, 8, 1)).astype(np.float32)
    # M2's layout: unlabelled rows first, labelled last (so one replica holds no label).
    m2_batch = {"x": digits, "y": np.array([0, 0, 0, 0, 3, 1, 4, 1], np.int32),
                "y_mask": np.array([False] * 4 + [True] * 4), "group": np.zeros(8, np.int32)}
    # ML-VAE's layout: 4 groups of 2, rows shuffled (GroupedSource shuffles them).
    groups = np.array([2, 0, 3, 1, 0, 2, 1, 3], np.int32)
    mlvae_batch = {"x": digits, "y": groups, "y_mask": np.zeros(8, bool), "group": groups}
    sprites = rng.uniform(size=(8, 16, 16, 1)).astype(np.float32)
    cascade_batch = {"x": sprites, "y": np.zeros(8, np.int32), "y_mask": np.zeros(8, bool),
                     "group": np.zeros(8, np.int32)}

    cases = {
        "m2": (lambda: models.M2((8, 8, 1), 10, latent_dim=3, hidden_units=(16,), num_examples=100,
                                 num_labelled=20), _OneBatch(m2_batch)),
        "mlvae": (lambda: models.MLVAE((8, 8, 1), 10, content_dim=2, style_dim=2, hidden_units=(16,)),
                  _OneBatch(mlvae_batch, groups_per_batch=4, group_size=2)),
        # assign_start=0: the global assignment runs in the step compared.
        "cascade_vae": (lambda: models.CascadeVAE((16, 16, 1), 3, latent_dim=3, filters=(4, 4), dense_units=8,
                                                   decoder_filters=(4,), assign_start=0, relieve_at=(0,)),
                        _OneBatch(cascade_batch)),
        "cascade_vae_per_replica": (
            lambda: models.CascadeVAE((16, 16, 1), 3, latent_dim=3, filters=(4, 4), dense_units=8,
                                      decoder_filters=(4,), assign_start=0, relieve_at=(0,),
                                      global_assignment=False), _OneBatch(cascade_batch)),
    }
    settings = training.TrainConfig(epochs=1, verbose=0, keep_best=False)
    report = {}

    def trained(make, batches, weights, where):
        model = make()
        if isinstance(model, models.CascadeVAE):
            model.sample_noise = tf.zeros  # z = mean: per-device random draws differ
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0))
        model.build_variables()
        if weights is not None:
            model.set_weights(weights)
        before = [np.array(w) for w in model.get_weights()]
        summary = training.train(model, batches, tempfile.mkdtemp(dir=where), settings)
        return model, before, summary

    with tempfile.TemporaryDirectory() as where:
        for name, (make, batches) in cases.items():
            keras.utils.set_random_seed(0)
            one, start, one_summary = trained(make, batches, None, where)
            with strategy.scope():
                two, _, two_summary = trained(make, batches, start, where)
            gradient_one = [b - a for a, b in zip(one.get_weights(), start)]
            gradient_two = [b - a for a, b in zip(two.get_weights(), start)]
            scale = max(float(np.max(np.abs(g))) for g in gradient_one)
            report[name] = {
                "replicas": strategy.num_replicas_in_sync,
                "loss": [one_summary["final_losses"]["loss"], two_summary["final_losses"]["loss"]],
                "max_gradient_difference": max(float(np.max(np.abs(a - b)))
                                               for a, b in zip(gradient_one, gradient_two)),
                "max_gradient": scale,
                "terms": [one_summary["final_losses"], two_summary["final_losses"]],
            }
        # Bad shares: an odd global batch, a group larger than a replica's share, 3 groups over 2.
        odd = {key: value[:7] for key, value in m2_batch.items()}
        bad = {"odd_batch": (cases["m2"][0], _OneBatch(odd)),
               "big_group": (cases["mlvae"][0], _OneBatch(mlvae_batch, groups_per_batch=1, group_size=8)),
               "three_groups": (cases["mlvae"][0], _OneBatch(mlvae_batch, groups_per_batch=3, group_size=2))}
        for name, (make, batches) in bad.items():
            with strategy.scope():
                try:
                    trained(make, batches, None, where)
                    report[name] = "no error"
                except ValueError as error:
                    report[name] = str(error)
    print(json.dumps(report))


def _worker_main(out):
    from tfssvae import configs, experiment, training

    config = configs.get("m2", {**WORKER_RUN, "model_dir": os.path.join(out, "run"),
                                "export_dir": os.path.join(out, "exports")})
    trained = []
    train = training.train

    def keep(model, *args, **kwargs):  # the experiment's model, for its final weights
        trained.append(model)
        return train(model, *args, **kwargs)

    training.train = keep
    started = time.perf_counter()
    results = experiment.run(config)
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    np.savez(os.path.join(out, f"worker{index}.npz"), *[np.array(w) for w in trained[-1].get_weights()])
    print(json.dumps({"index": index, "chief": results.get("chief", True), "steps": results["steps"],
                      "examples_per_second": results["train_examples_per_second"],
                      "seconds": time.perf_counter() - started}))


# ----------------------------------------------------------------------------- pytest side

def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """The mirrored run and the two workers, started together (their start-up and waits
    overlap); killed at the end if still running (a worker whose peer died would wait forever)."""
    out = str(tmp_path_factory.mktemp("workers"))
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    processes = {"mirrored": subprocess.Popen([sys.executable, __file__, "mirrored"], env=ENV, **pipes)}
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes[f"worker{index}"] = subprocess.Popen([sys.executable, __file__, "worker", out], **pipes,
                                                       env={**ENV, "TF_CONFIG": json.dumps(tf_config)})
    deadline = time.monotonic() + 240
    results = {}

    def result(name):
        if name not in results:
            stdout, stderr = processes[name].communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert processes[name].returncode == 0, f"{name}: {stderr[-3000:]}"
            results[name] = json.loads(stdout.strip().splitlines()[-1])
        return results[name]

    yield out, result
    for process in processes.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.fixture(scope="module")
def mirrored_report(launched):
    return launched[1]("mirrored")


@pytest.mark.parametrize("name", ["m2", "mlvae", "cascade_vae"])
def test_two_replicas_give_one_devices_loss_and_gradient(mirrored_report, name):
    report = mirrored_report[name]
    assert report["replicas"] == 2
    one, two = report["loss"]
    # float32 sums taken in another order (two partial sums of 4 rows, then their sum):
    # a few ulps of a loss of tens of nats.
    assert two == pytest.approx(one, rel=1e-5)
    # Gradients (weight changes at learning rate 1) agree to float32 rounding of the
    # per-replica partial sums: 1e-5 of the largest gradient entry, plus the rounding of
    # w - g around weights of order 1 (1e-6).
    assert report["max_gradient_difference"] <= 1e-5 * report["max_gradient"] + 1e-6, report


def test_per_replica_assignment_is_a_switch(mirrored_report):
    # Each replica's own assignment: a finite step; pairs are counted within a share, so
    # no equality with one device is claimed.
    assert np.isfinite(mirrored_report["cascade_vae_per_replica"]["loss"][1])


def test_bad_shares_are_refused_with_a_clear_error(mirrored_report):
    assert "batch_size" in mirrored_report["odd_batch"] and "7 examples" in mirrored_report["odd_batch"]
    assert "larger than a replica's share" in mirrored_report["big_group"]
    assert "groups_per_batch" in mirrored_report["three_groups"] and "whole groups" in mirrored_report["three_groups"]


@pytest.fixture(scope="module")
def two_workers(launched):
    out, result = launched
    return out, [result("worker0"), result("worker1")]


def _weights(path):
    with np.load(path) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def test_two_workers_train_m2_to_identical_weights(two_workers):
    out, reports = two_workers
    assert [r["chief"] for r in reports] == [True, False]
    assert reports[0]["steps"] == reports[1]["steps"] > 1
    first, second = _weights(os.path.join(out, "worker0.npz")), _weights(os.path.join(out, "worker1.npz"))
    # Both workers apply the same all-reduced gradients to the same weights: identical bits.
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_only_the_chief_writes(two_workers):
    out, _ = two_workers
    run = os.path.join(out, "run")
    assert os.path.exists(os.path.join(run, "metrics.json")) and os.path.exists(os.path.join(run, "model.json"))
    assert len(os.listdir(os.path.join(out, "exports", "m2"))) == 1  # one SavedModel version
    assert not [name for name in os.listdir(run) if name.startswith(".worker")]  # scratch removed


def test_a_two_worker_checkpoint_restores_on_one_device(two_workers):
    import tensorflow as tf

    from tfssvae import fused, models

    out, reports = two_workers
    run = os.path.join(out, "run")
    with open(os.path.join(run, "model.json")) as f:
        saved = json.load(f)
    model = models.model_class(saved["model"])(**saved["config"])
    model.compile(optimizer=fused.Adam(1e-3))
    model.build_variables()
    step = tf.Variable(0, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, step=step)
    checkpoint.restore(tf.train.latest_checkpoint(os.path.join(run, "checkpoints"))).expect_partial()
    assert int(step.numpy()) == reports[0]["steps"]
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), _weights(os.path.join(out, "worker0.npz"))))


def test_strategy_names_and_tf_config_are_checked(monkeypatch):
    from tfssvae import configs, experiment, training

    with pytest.raises(ValueError, match="strategy: expected one of"):
        training.make_strategy("parameter_server")
    with pytest.raises(ValueError, match="strategy: expected one of"):
        experiment.validate(configs.get("m2", {"strategy": "mirored"}))
    monkeypatch.delenv("TPU_NAME", raising=False)
    with pytest.raises(ValueError, match="tpu needs a TPU, and none is found here"):
        training.make_strategy("tpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG environment variable, which is not set"):
        training.make_strategy("multi_worker")
    for bad, words in [("{not json", "not valid JSON"), ('{"cluster": {}}', "no cluster with a 'worker' list"),
                       ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}',
                        "host:port"),
                       ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "ps", "index": 0}}',
                        "task: expected"),
                       ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 1}}',
                        "task.index")]:
        monkeypatch.setenv("TF_CONFIG", bad)
        with pytest.raises(ValueError, match=words):
            training.make_strategy("multi_worker")


def test_the_binary_reports_a_bad_strategy_in_one_line(tmp_path):
    env = {key: value for key, value in ENV.items() if key != "TF_CONFIG"}
    completed = subprocess.run([sys.executable, "-m", "binaries.train", "--config.strategy=multi_worker",
                                f"--config.model_dir={tmp_path}", "--config.export=false"],
                               capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert lines[-1].startswith("tfssvae-train: error: strategy: multi_worker reads the cluster from the "
                                "TF_CONFIG"), completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr


if __name__ == "__main__":
    if sys.argv[1] == "mirrored":
        _mirrored_main()
    elif sys.argv[1] == "worker":
        _worker_main(sys.argv[2])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}; expected mirrored or worker")
