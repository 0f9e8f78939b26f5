"""A whole run on the embedded digits, then its SavedModel loaded in a fresh Python process."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfssvae import configs
from tfssvae import data as data_lib
from tfssvae import experiment
from tfssvae import export as export_lib

TINY = {"dataset": "digits", "num_labels": 20, "epochs": 1, "batch_size": 50, "validation_size": 50,
        "model.hidden_units": (16,), "verbose": 0}
TINY_LATENT = {"m2": {"model.latent_dim": 3},
               "m1m2": {"m1_epochs": 1, "model.m1_latent_dim": 3, "model.m2_latent_dim": 3}}


def tiny(name, changes):
    """The package config ``name`` with tiny sizes, then ``changes`` (dotted field names)."""
    return configs.get(name, {**TINY, **TINY_LATENT[name], **changes})


@pytest.fixture(scope="module")
def m2_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("m2_run")
    config = tiny("m2", {"model_dir": str(root / "model"), "export_dir": str(root / "exports")})
    return config, experiment.run(config)


def test_run_writes_metrics_and_a_numbered_export(m2_run):
    config, results = m2_run
    written = json.loads(open(os.path.join(config.model_dir, "metrics.json")).read())
    assert written == results
    assert 0.0 <= written["test_error"] <= 1.0 and written["train_examples_per_second"] > 0
    assert results["export_path"] == os.path.join(config.export_dir, "m2", "1")
    assert os.path.exists(os.path.join(results["export_path"], "saved_model.pb"))
    # Nothing half-written is left beside the version.
    assert os.listdir(os.path.join(config.export_dir, "m2")) == ["1"]


LOAD_AND_CLASSIFY = """
import json, sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
images = np.load(sys.argv[2])
out = loaded.signatures["serving_default"](images=tf.constant(images))
code = loaded.signatures["encode"](images=tf.constant(images))
made = loaded.signatures["generate"](labels=tf.constant([0, 1], tf.int32), latent=tf.zeros([2, 3]))
rec = loaded.signatures["reconstruct"](images=tf.constant(images))
print(json.dumps({
    "probabilities": out["probabilities"].numpy().tolist(),
    "class": out["class"].numpy().tolist(),
    "mean_shape": list(code["mean"].shape),
    "generated_shape": list(made["images"].shape),
    "reconstruction_shape": list(rec["reconstruction"].shape),
    "signatures": sorted(loaded.signatures.keys()),
}))
"""


def test_export_classifies_in_a_fresh_process_like_the_model(m2_run, tmp_path):
    config, results = m2_run
    source = data_lib.load_source("digits")
    images = source.test_images[:7]
    np.save(tmp_path / "images.npy", images)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    completed = subprocess.run(
        [sys.executable, "-c", LOAD_AND_CLASSIFY, results["export_path"], str(tmp_path / "images.npy")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    served = json.loads(completed.stdout.strip().splitlines()[-1])
    assert served["signatures"] == sorted(export_lib.SIGNATURES)
    assert served["mean_shape"] == [7, 3]
    assert served["generated_shape"] == [2, 8, 8, 1]
    assert served["reconstruction_shape"] == [7, 8, 8, 1]

    # The same numbers as the model that was trained, restored from its checkpoint here.
    restored = experiment.build_model(config, (8, 8, 1), 10, num_examples=1)
    restored.build_variables()
    checkpoint = tf.train.Checkpoint(model=restored)
    checkpoint.restore(tf.train.latest_checkpoint(os.path.join(config.model_dir, "checkpoints"))).expect_partial()
    expected = restored.classify(images)
    np.testing.assert_allclose(served["probabilities"], expected["probabilities"].numpy(), rtol=1e-4, atol=1e-6)
    assert served["class"] == expected["class"].numpy().tolist()


def test_saved_model_cli_lists_the_signatures(m2_run):
    cli = shutil.which("saved_model_cli")
    if cli is None:
        pytest.skip("saved_model_cli is not on PATH")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    shown = subprocess.run([cli, "show", "--all", "--dir", m2_run[1]["export_path"]],
                           capture_output=True, text=True, env=env, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    for name in export_lib.SIGNATURES:
        assert f"signature_def['{name}']" in shown.stdout
    for tensor in ("images", "probabilities", "class", "mean", "scale", "reconstruction", "labels", "latent"):
        assert f"['{tensor}']" in shown.stdout


def test_versions_count_up_and_a_failed_export_leaves_nothing(m2_run, tmp_path, monkeypatch):
    config, _ = m2_run
    model = experiment.build_model(config, (8, 8, 1), 10, num_examples=1)
    base = str(tmp_path / "exports")
    assert export_lib.export(model, base).endswith(os.sep + "1")
    assert export_lib.export(model, base).endswith(os.sep + "2")

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        export_lib.export(model, base)
    assert sorted(os.listdir(base)) == ["1", "2"]
    with pytest.raises(ValueError, match="already exists"):
        export_lib.export(model, base, version=2)


def test_m1m2_runs_end_to_end(tmp_path):
    # One epoch of a tiny M1 moves no posterior mean by 0.1: keep every dimension (threshold 0).
    config = tiny("m1m2", {"model_dir": str(tmp_path / "model"), "export_dir": str(tmp_path / "exports"),
                           "model.active_threshold": 0.0})
    results = experiment.run(config)
    assert json.loads((tmp_path / "model" / "model.json").read_text())["config"]["active_dims"] == [0, 1, 2]
    assert os.path.exists(os.path.join(config.model_dir, "m1", "checkpoints"))
    assert os.path.exists(os.path.join(results["export_path"], "saved_model.pb"))


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"model.name": "m3"}, "model: expected one of"),
        ({"dataset": "cifar"}, "cifar"),
        ({"num_labels": 5000}, "num_labels"),
        ({"num_labels": 25}, "divisible"),
    ],
)
def test_bad_configs_are_value_errors(tmp_path, changes, match):
    config = tiny("m2", {"model_dir": str(tmp_path), "export": False, **changes})
    with pytest.raises(ValueError, match=match):
        experiment.run(config)


def run_binary(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_export_and_evaluate_binaries_reproduce_the_test_error(m2_run, tmp_path):
    config, results = m2_run
    exported = run_binary("binaries.export", f"--model_dir={config.model_dir}", f"--export_dir={tmp_path}")
    assert exported.returncode == 0, exported.stderr[-3000:]
    path = os.path.join(str(tmp_path), "m2", "1")
    assert f"SavedModel: {path}" in exported.stdout
    evaluated = run_binary("binaries.evaluate", f"--saved_model={path}", "--dataset=digits")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads(evaluated.stdout[evaluated.stdout.index("{"):])
    assert report["test_error"] == pytest.approx(results["test_error"])

    missing = run_binary("binaries.export", f"--model_dir={tmp_path / 'nothing'}")
    assert missing.returncode == 2 and "no model.json" in missing.stderr


def test_the_binary_reports_bad_flags_without_a_traceback():
    completed = run_binary("binaries.train", "--config.model.name=m9", "--config.export=false")
    assert completed.returncode == 2
    assert "error: model: expected one of" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_a_seed_makes_a_run_repeatable_on_cpu(tmp_path):
    summaries = []
    for name in ("a", "b"):
        config = tiny("m2", {"model_dir": str(tmp_path / name), "export": False})
        experiment.run(config)
        summaries.append(json.loads((tmp_path / name / "train_summary.json").read_text())["final_losses"])
    assert summaries[0] == summaries[1]
    other = tiny("m2", {"model_dir": str(tmp_path / "c"), "export": False, "seed": 1})
    experiment.run(other)
    assert json.loads((tmp_path / "c" / "train_summary.json").read_text())["final_losses"] != summaries[0]
