"""The benchmark scripts' own pieces: a clear error for a missing peer, the idx writer the peer reads."""
import os
import subprocess
import sys

import numpy as np
import pytest

from tfssvae import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


@pytest.mark.parametrize("script", ["peer_comparison.py", "m2_speed.py"])
def test_a_peer_path_that_does_not_exist_is_a_clear_error(script, tmp_path):
    missing = str(tmp_path / "no_such_peer.py")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), f"--peer={missing}"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode != 0
    assert "--peer: " in out.stderr and "no_such_peer.py" in out.stderr
    assert "Traceback" not in out.stderr


def test_digits_written_as_idx_load_back_as_the_same_data(tmp_path):
    import peer_comparison

    source = data.load_source("digits")
    directory = peer_comparison.write_idx(str(tmp_path / "digits_idx"), source)
    again = data.load_source(f"idx:{directory}")
    np.testing.assert_array_equal(again.train_labels, source.train_labels)
    np.testing.assert_array_equal(again.test_labels, source.test_labels)
    # Pixels are stored as uint8, so they come back within half a grey level.
    np.testing.assert_allclose(again.train_images, source.train_images, atol=0.5 / 255 + 1e-7)
    np.testing.assert_allclose(again.test_images, source.test_images, atol=0.5 / 255 + 1e-7)


def test_zero_speed_rounds_is_a_clear_error():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "m2_speed.py"), "--rounds=0"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode != 0
    assert "--rounds: expected at least 1, received 0" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_learning_rate_that_is_not_positive_is_a_clear_error():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "peer_comparison.py"),
                          "--learning_rate=0", "--systems=m2"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode != 0
    assert "--learning_rate: must be positive, received 0.0" in out.stderr
    assert "Traceback" not in out.stderr


def test_m1_features_refuses_a_directory_without_a_run(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "m1_features.py"),
                          f"--model_dir={tmp_path}"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode != 0
    assert f"--model_dir: {tmp_path} has no model.json" in out.stderr
    assert "Traceback" not in out.stderr
