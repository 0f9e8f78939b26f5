"""Bad inputs meet clear errors: SavedModel signatures (in a fresh process), flags and data,
run directories and export."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tfssvae import configs
from tfssvae import data as data_lib
from tfssvae import experiment
from tfssvae import export as export_lib
from tfssvae.data import sources as data_sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
TINY = {"dataset": "digits", "num_labels": 20, "epochs": 1, "batch_size": 50, "validation_size": 50,
        "model.hidden_units": (16,), "model.latent_dim": 3, "verbose": 0}


def tiny(changes):
    return configs.get("m2", {**TINY, **changes})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    config = tiny({"model_dir": str(root / "model"), "export_dir": str(root / "exports")})
    return experiment.run(config)["export_path"]


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
