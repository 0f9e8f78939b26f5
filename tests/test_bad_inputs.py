"""Bad inputs meet clear errors: SavedModel signatures (in a fresh process), flags and data,
run directories and export."""
import json
import logging
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tfssvae import configs
from tfssvae import data as data_lib
from tfssvae import experiment
from tfssvae import export as export_lib
from tfssvae.data import sources as data_sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
           PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
TINY = {"dataset": "digits", "num_labels": 20, "epochs": 1, "batch_size": 50, "validation_size": 50,
        "model.hidden_units": (16,), "model.latent_dim": 3, "verbose": 0}


def tiny(changes):
    return configs.get("m2", {**TINY, **changes})


@pytest.fixture(scope="module")
def m2_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    config = tiny({"model_dir": str(root / "model"), "export_dir": str(root / "exports")})
    return config, experiment.run(config)


@pytest.fixture(scope="module")
def exported(m2_run):
    return m2_run[1]["export_path"]


# Each case: signature, its inputs (as Python literals built in the fresh process), and the
# words the error must hold (the input's name and what it expected).
FEED_BAD_INPUTS = r"""
import json, sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
good = np.full((2, 8, 8, 1), 0.5, np.float32)
nan = good.copy(); nan[1, 2, 3, 0] = np.nan
nan_latent = np.zeros((2, 3), np.float32); nan_latent[0, 1] = np.nan
cases = {
    "28x28 images": ("classify", {"images": np.zeros((2, 28, 28, 1), np.float32)}),
    "rank-2 images": ("classify", {"images": np.zeros((4, 64), np.float32)}),
    "3 channels": ("encode", {"images": np.zeros((2, 8, 8, 3), np.float32)}),
    "NaN pixel": ("reconstruct", {"images": nan}),
    "pixels in [0, 255]": ("serving_default", {"images": good * 255}),
    "label 10 of 10": ("generate", {"labels": np.array([0, 10], np.int32), "latent": np.zeros((2, 3), np.float32)}),
    "label -1": ("generate", {"labels": np.array([-1, 0], np.int32), "latent": np.zeros((2, 3), np.float32)}),
    "latent width 5": ("generate", {"labels": np.array([0, 1], np.int32), "latent": np.zeros((2, 5), np.float32)}),
    "NaN latent": ("generate", {"labels": np.array([0, 1], np.int32), "latent": nan_latent}),
    "3 labels, 2 latents": ("generate", {"labels": np.array([0, 1, 2], np.int32),
                                         "latent": np.zeros((2, 3), np.float32)}),
    "good images": ("classify", {"images": good}),
    "good generate": ("generate", {"labels": np.array([0, 9], np.int32), "latent": np.zeros((2, 3), np.float32)}),
}
report = {}
for case, (signature, inputs) in cases.items():
    try:
        outputs = loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
        report[case] = ["ok", {k: list(v.shape) for k, v in outputs.items()}]
    except Exception as error:
        report[case] = [type(error).__name__, str(error)]
declared = {name: {key: spec.shape.rank for key, spec in function.structured_input_signature[1].items()}
            for name, function in loaded.signatures.items()}
print(json.dumps({"report": report, "declared": declared}))
"""

EXPECTED = {
    "28x28 images": ["images: expected shape [batch, 8, 8, 1], received shape", "[2 28 28 1]"],
    "rank-2 images": ["images: expected shape [batch, 8, 8, 1], received shape", "[4 64]"],
    "3 channels": ["images: expected shape [batch, 8, 8, 1]", "[2 8 8 3]"],
    "NaN pixel": ["images: expected finite values", "[1] [NaN or infinite values]"],
    "pixels in [0, 255]": ["images: expected values in [0.0, 1.0]", "divided by 255", "[127.5] [to] [127.5]"],
    "label 10 of 10": ["labels: expected values in [0, 10)", "[0] [to] [10]"],
    "label -1": ["labels: expected values in [0, 10)", "[-1] [to] [0]"],
    "latent width 5": ["latent: expected shape [batch, 3], received shape", "[2 5]"],
    "NaN latent": ["latent: expected finite values"],
    "3 labels, 2 latents": ["labels and latent: expected the same batch size", "[3] [and] [2]"],
}


def test_every_signature_checks_its_inputs_in_a_fresh_process(exported):
    completed = subprocess.run([sys.executable, "-c", FEED_BAD_INPUTS, exported], capture_output=True,
                               text=True, env=ENV, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    report = result["report"]
    for case, words in EXPECTED.items():
        kind, message = report[case]
        assert kind == "InvalidArgumentError", (case, kind, message)
        for word in words:
            assert word in message, (case, word, message)
    assert report["good images"] == ["ok", {"probabilities": [2, 10], "class": [2]}]
    assert report["good generate"] == ["ok", {"images": [2, 8, 8, 1]}]
    # Inputs are declared with an unknown rank, so no optimizer can fold the checks away.
    assert all(rank is None for inputs in result["declared"].values() for rank in inputs.values())


def test_export_records_the_expected_input_shapes_and_is_readable(exported):
    inputs = export_lib.serving_inputs(exported)
    assert inputs["classify"]["images"]["shape"] == [None, 8, 8, 1]
    assert inputs["generate"]["latent"]["shape"] == [None, 3]
    assert inputs["generate"]["labels"]["range"] == [0, 10]
    # A model server running as another user can read the version (mkdtemp makes 0700).
    assert os.stat(exported).st_mode & 0o777 == 0o755
    assert os.stat(os.path.join(exported, "saved_model.pb")).st_mode & 0o044 == 0o044


def run_binary(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout, cwd=ROOT)


def test_evaluate_refuses_a_directory_without_a_saved_model(tmp_path):
    completed = run_binary("binaries.evaluate", f"--saved_model={tmp_path}", "--dataset=digits")
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "holds no SavedModel" in completed.stderr and "Traceback" not in completed.stderr


def test_evaluate_refuses_a_learning_curve_of_a_model_that_is_not_cascade_vae(m2_run):
    completed = run_binary("binaries.evaluate", f"--model_dir={m2_run[0].model_dir}", "--dataset=digits",
                           "--learning_curve")
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "--learning_curve is for cascade_vae runs" in completed.stderr and "Traceback" not in completed.stderr


# --- flags and data ------------------------------------------------------------------------

def write_idx(path, array):
    """``array`` (uint8) as an idx file: two zero bytes, type 0x08, rank, big-endian dims, data."""
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.tobytes())


def test_an_out_of_range_idx_label_is_named_not_taken_for_more_classes(tmp_path):
    labels = np.arange(40) % 10
    labels[7] = 12
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((40, 4, 4)))
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((10, 4, 4)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(10))
    with pytest.raises(ValueError, match=r"label 12 at index 7 is outside the classes 0\.\.9 .*class 10, 11"):
        data_lib.load_source(f"idx:{tmp_path}")
    labels[7] = 9  # the same directory with the label fixed loads, with 10 classes
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    assert data_lib.load_source(f"idx:{tmp_path}").num_classes == 10


def test_tfds_without_prepared_data_says_to_prepare_it(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    # As on a machine without internet (here even where there is one: no download in tests).
    monkeypatch.setattr(data_sources, "_download_possible", lambda: False)
    with pytest.raises(ValueError, match=r"'tfds:mnist': not prepared in .*cannot be downloaded.*data_dir"):
        data_lib.load_source("tfds:mnist", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"no dataset named 'no_such_dataset'"):
        data_lib.load_source("tfds:no_such_dataset", data_dir=str(tmp_path))


def test_negative_labelled_batch_size_other_than_auto_is_refused():
    with pytest.raises(ValueError, match=r"labelled_batch_size: expected an integer >= -1, received -7"):
        experiment.validate(tiny({"labelled_batch_size": -7}))
    experiment.validate(tiny({"labelled_batch_size": -1}))  # -1 is the documented auto


@pytest.mark.parametrize("flag, message", [
    ("--config.labelled_batch_size=0", "labelled_batch_size: 0 would leave the 100 labels unused"),
    ("--config.model.hidden_units=abc", "model.hidden_units: expected an integer in each entry"),
])
def test_the_train_binary_refuses_bad_flags_in_one_line(flag, message, tmp_path):
    completed = run_binary("binaries.train", flag, f"--config.model_dir={tmp_path}", "--config.export=false")
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert f"tfssvae-train: error: {message}" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not os.listdir(tmp_path)  # refused before anything was written


# --- run directories and export ---------------------------------------------------------------

def test_a_rerun_with_other_settings_is_refused_before_anything_is_written(m2_run):
    config, _ = m2_run
    model_json = os.path.join(config.model_dir, "model.json")
    before = (open(model_json).read(), os.stat(model_json).st_mtime_ns)
    other = tiny({"model_dir": config.model_dir, "export_dir": config.export_dir, "num_labels": 30,
                  "model.latent_dim": 4})
    with pytest.raises(ValueError, match=r"holds a run with other settings \(model\.latent_dim: 3 there, 4 now; "
                                         r"num_labels: 20 there, 30 now\)"):
        experiment.run(other)
    assert (open(model_json).read(), os.stat(model_json).st_mtime_ns) == before
    assert sorted(os.listdir(os.path.join(config.export_dir, "m2"))) == ["1"]


def test_an_unwritable_export_dir_is_refused_before_training(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    config = tiny({"model_dir": str(tmp_path / "model"), "export_dir": str(tmp_path / "file" / "exports")})
    with pytest.raises(ValueError, match=r"export_dir: .*file is not a directory"):
        experiment.run(config)
    assert not (tmp_path / "model").exists()
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "read_only").mkdir(mode=0o555)
        config = tiny({"model_dir": str(tmp_path / "model"), "export_dir": str(tmp_path / "read_only")})
        with pytest.raises(ValueError, match=r"export_dir: .*read_only is not writable"):
            experiment.run(config)


def test_metrics_are_written_before_the_export(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(export_lib, "export", full_disk)
    config = tiny({"model_dir": str(tmp_path / "model"), "export_dir": str(tmp_path / "exports")})
    with pytest.raises(OSError, match="No space left"):
        experiment.run(config)
    written = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert 0.0 <= written["test_error"] <= 1.0 and "export_path" not in written


# A run slowed down (a sleep before every training call) so that a test can act while it trains.
SLOW_RUN = r"""
import json, sys, time
from tfssvae import configs, experiment, training
steps_of = training._multi_step
def slowed(model, jit_compile, strategy=None, after_step=None):
    steps = steps_of(model, jit_compile, strategy, after_step)
    def call(iterator, num_steps):
        time.sleep(0.05)
        return steps(iterator, num_steps)
    return call
training._multi_step = slowed
changes = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(sys.argv[1]).items()}
experiment.run(configs.get("m2", changes))
print("finished")
"""

# 1,297 training images, 20 labelled and 30 unlabelled a batch: 43 steps an epoch.
STEPS_PER_EPOCH = 43


def slow_run(changes):
    return subprocess.Popen([sys.executable, "-c", SLOW_RUN, json.dumps({**TINY, **changes})],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)


def wait_for(condition, process, what, timeout=240):
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {process.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_killed_run_with_a_truncated_checkpoint_resumes_from_the_one_before(tmp_path, caplog):
    import tensorflow as tf

    changes = {"model_dir": str(tmp_path / "model"), "export": False, "epochs": 3, "checkpoint_every": 10,
               "steps_per_call": 1}
    checkpoints = str(tmp_path / "model" / "checkpoints")

    def kept():
        state = tf.train.get_checkpoint_state(checkpoints)
        return list(state.all_model_checkpoint_paths) if state else []

    process = slow_run(changes)
    try:
        wait_for(lambda: len(kept()) >= 2, process, "two checkpoints")
        process.kill()  # SIGKILL: no cleanup of any kind
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    previous, latest = kept()[-2:]
    assert int(latest.rsplit("-", 1)[1]) < 3 * STEPS_PER_EPOCH  # killed mid-run
    data = latest + ".data-00000-of-00001"
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)

    with caplog.at_level(logging.WARNING):
        results = experiment.run(tiny(changes))
    warnings = " ".join(record.getMessage() for record in caplog.records)
    assert f"Checkpoint {latest} cannot be restored" in warnings
    assert f"Resuming from {previous} instead of the damaged {latest}" in warnings
    assert results["steps"] == 3 * STEPS_PER_EPOCH
    assert json.loads((tmp_path / "model" / "metrics.json").read_text()) == results


def test_a_second_run_on_a_busy_model_dir_is_refused_and_the_first_finishes(tmp_path):
    changes = {"model_dir": str(tmp_path / "model"), "export_dir": str(tmp_path / "exports"), "epochs": 2}
    lock = tmp_path / "model" / ".lock"
    first = slow_run(changes)
    try:
        wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid) and
                 (tmp_path / "model" / "model.json").exists(), first, "the first run to hold the lock")
        model_json = (tmp_path / "model" / "model.json").read_text()
        with pytest.raises(ValueError, match=rf"model_dir: .* is in use by another run \(process {first.pid} "):
            experiment.run(tiny(changes))
        assert (tmp_path / "model" / "model.json").read_text() == model_json
        stdout, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0 and stdout.strip().endswith("finished"), stderr[-3000:]
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["steps"] == 2 * STEPS_PER_EPOCH
    assert os.listdir(tmp_path / "exports" / "m2") == ["1"]
    # The lock went with the process: the same run again finds it finished.
    assert experiment.run(tiny({**changes, "export": False}))["steps"] == 2 * STEPS_PER_EPOCH


def test_an_export_skips_a_version_another_export_is_writing(m2_run, tmp_path):
    config, _ = m2_run
    model = experiment.build_model(config, (8, 8, 1), 10, num_examples=1)
    base = tmp_path / "exports"
    base.mkdir()
    (base / ".claim-1").mkdir()  # another process is writing version 1 right now
    assert export_lib.export(model, str(base)) == str(base / "2")
    assert sorted(os.listdir(base)) == [".claim-1", "2"]  # its own claim is gone, the other's kept
    with pytest.raises(ValueError, match="already exists"):
        export_lib.export(model, str(base), version=1)


def test_export_of_a_run_skips_a_damaged_checkpoint(m2_run, tmp_path):
    import shutil

    import tensorflow as tf

    config, _ = m2_run
    model_dir = tmp_path / "model"
    shutil.copytree(config.model_dir, model_dir)
    for directory in ("best", "checkpoints"):
        for path in tf.train.get_checkpoint_state(str(model_dir / directory)).all_model_checkpoint_paths:
            data = path + ".data-00000-of-00001"
            with open(data, "r+b") as f:
                f.truncate(os.path.getsize(data) // 2)
    with pytest.raises(ValueError, match=r"no checkpoint in .* can be restored \(damaged: .*best/ckpt-"):
        export_lib.restore_run(str(model_dir))


def test_the_cascade_objective_script_refuses_a_run_of_another_model(m2_run):
    config, _ = m2_run
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "cascade_objective.py"),
                          f"--model_dirs={config.model_dir}", "--samples=16"],
                         capture_output=True, text=True, timeout=300, cwd=root)
    assert out.returncode != 0
    assert f"--model_dirs: {config.model_dir} holds a m2 run, not cascade_vae" in out.stderr
    assert "Traceback" not in out.stderr


def test_eager_serving_methods_refuse_non_finite_inputs():
    from tfssvae import models

    model = models.M2((8, 8, 1), 10, latent_dim=3, hidden_units=(8,), num_examples=100, num_labelled=20)
    images = np.full((2, 8, 8, 1), 0.5, np.float32)
    images[1, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"images: expected finite values, received 1 NaN or infinite values"):
        model.classify(images)
    latent = np.zeros((2, 3), np.float32)
    latent[:, 1] = np.nan
    with pytest.raises(ValueError, match=r"latent: expected finite values, received 2 NaN"):
        model.generate(np.array([0, 1]), latent)
    assert model.classify(np.full((2, 8, 8, 1), 0.5, np.float32))["class"].shape == (2,)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc, where nothing can be created")
def test_a_model_dir_that_cannot_be_created_is_one_line_from_the_binary():
    completed = run_binary("binaries.train", "--config.model_dir=/proc/tfssvae_test", "--config.export=false")
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "tfssvae-train: error: model_dir: /proc/tfssvae_test/.lock cannot be written" in completed.stderr
    assert "Traceback" not in completed.stderr
