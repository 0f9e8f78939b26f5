"""The supervised count baseline: it counts, and it sees exactly the multi-digit run's labelled canvases."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tfssvae import configs, count_baseline, experiment
from tfssvae.data import load_source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 24x24 canvases of 0..2 digits (the tiny variant), enough of them for a CNN to learn to count.
EASY = {"train_canvases": 600, "count_supervision": 0.5, "validation_size": 100, "test_canvases": 200}


def test_it_learns_to_count_far_above_chance():
    config = configs.get("multi_digit:tiny", EASY)
    results = count_baseline.run(config, epochs=15, patience=5)
    test_counts = experiment.multi_digit_canvases(config, load_source("digits"))["test"]["count"]
    majority = np.bincount(test_counts).max() / len(test_counts)  # always answering the commonest count
    # Measured 0.94 (seed 0, 13 epochs); the commonest of three counts is about a third of the canvases.
    assert results["test_count_accuracy"] >= 0.8 and results["test_count_accuracy"] >= majority + 0.4
    assert results["labelled_canvases"] == 300 and results["test_canvases"] == 200  # 0.5 of 600
    assert results["validation_canvases"] == 100 and results["max_digits"] == 2
    assert 1 <= results["best_epoch"] <= results["epochs_trained"] <= 15
    assert results["seconds"] > 0


def test_the_best_validation_epoch_is_the_one_kept():
    config = configs.get("multi_digit:tiny", {**EASY, "train_canvases": 200})
    canvases = experiment.multi_digit_canvases(config, load_source("digits"))
    model = count_baseline.build_counter((24, 24, 1), 2, filters=(8, 8), dense_units=16)
    validation = (canvases["validation"]["x"], canvases["validation"]["count"])
    fitted = count_baseline.fit_counter(model, count_baseline.labelled_set(canvases), validation, epochs=6,
                                        patience=6)
    # The kept weights' accuracy is the best epoch's, not the last's (Keras' accuracy over 100 canvases and
    # ours are the same fraction of the same predictions).
    assert count_baseline.count_accuracy(model, *validation) == pytest.approx(fitted["validation_count_accuracy"],
                                                                              abs=1e-6)
    assert fitted["epochs_trained"] == 6


def test_it_trains_on_exactly_the_canvases_the_run_observes():
    config = configs.get("multi_digit:tiny", {"count_supervision": 0.25})
    canvases = experiment.multi_digit_canvases(config, load_source("digits"))
    x, counts = count_baseline.labelled_set(canvases)
    assert canvases["labelled"].sum() == len(x) == 16  # round(0.25 * 64)
    # Every canvas whose count the semi-supervised run's batches show, over two epochs, with its count.
    observed = {}
    for epoch in (0, 1):
        for batch in experiment.multi_digit_batches(config, canvases).epoch(epoch):
            mask = batch["y_mask"].numpy()
            for canvas, count in zip(batch["x"].numpy()[mask], batch["y"].numpy()[mask]):
                observed[canvas.tobytes()] = int(count)
    assert observed == {canvas.tobytes(): int(count) for canvas, count in zip(x, counts)}
    # And none of the run's other training canvases (those with digits: all empty canvases are alike).
    train = canvases["train"]
    hidden = train["x"][~canvases["labelled"] & (train["count"] > 0)]
    assert len(hidden) > 30 and not {canvas.tobytes() for canvas in hidden} & set(observed)


def test_bad_settings_are_value_errors():
    tiny = configs.get("multi_digit:tiny")
    with pytest.raises(ValueError, match="validation_size: the baseline chooses its epoch"):
        count_baseline.run(configs.get("multi_digit:tiny", {"validation_size": 0}))
    with pytest.raises(ValueError, match="unknown \\['epoch'\\]"):
        count_baseline.run(tiny, epoch=3)
    with pytest.raises(ValueError, match="count_supervision: 0.0 observes no count"):
        count_baseline.run(configs.get("multi_digit:tiny", {"count_supervision": 0.0, "labelled_batch_size": 0}))
    with pytest.raises(ValueError, match="canvas_shape"):
        count_baseline.build_counter((24, 24), 2)
    with pytest.raises(ValueError, match=r"filters: expected a sequence of positive integers, received \(8, 0\)"):
        count_baseline.build_counter((24, 24, 1), 2, filters=(8, 0))
    model = count_baseline.build_counter((24, 24, 1), 2)
    canvases = np.zeros((4, 24, 24, 1), np.float32)
    with pytest.raises(ValueError, match="train counts must be in 0..2"):
        count_baseline.fit_counter(model, (canvases, np.array([0, 1, 3, 0])), (canvases, np.zeros(4, int)))
    with pytest.raises(ValueError, match="expected canvases of shape \\(24, 24, 1\\)"):
        count_baseline.count_accuracy(model, np.zeros((4, 12, 12, 1)), np.zeros(4, int))


def test_the_benchmark_script_prints_and_appends_one_json_line(tmp_path):
    results = tmp_path / "baseline.jsonl"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "multi_digit_baseline.py"),
                           "--variant=tiny", "--count_supervision=0.5", "--seed=1", "--epochs=2",
                           "--filters=none", "--dense_units=8", f"--results={results}"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert line["labelled_canvases"] == 32 and line["seed"] == 1 and line["count_supervision"] == 0.5  # 0.5 of 64
    assert line["seconds"] > 0 and line["epochs_trained"] <= 2
    assert line["settings"]["filters"] == [] and line["settings"]["dense_units"] == 8  # an MLP of 8 units
    assert [json.loads(text) for text in results.read_text().splitlines()] == [line]


def test_the_benchmark_script_refuses_filters_that_are_not_integers():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "multi_digit_baseline.py"),
                           "--variant=tiny", "--filters=8,wide"], capture_output=True, text=True, env=env,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 2
    assert "--filters: expected integers or 'none', received 8,wide" in done.stderr
    assert "Traceback" not in done.stderr
