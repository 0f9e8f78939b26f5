"""ssdgm_mnist / ssdgm_svhn: trained through the binaries' code path, exported, drawn as figures."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from tfssvae import configs, experiment, figures, models

TINY = {"num_labels": 20, "epochs": 1, "batch_size": 20, "labelled_batch_size": 10, "validation_size": 10,
        "model.latent_dim": 3, "model.hidden_units": (16,), "verbose": 0}


def test_ssdgm_svhn_trains_on_tfds_svhn_and_exports(tmp_path):
    with tfds.testing.mock_data(num_examples=60):
        results = experiment.run(configs.get("ssdgm_svhn", {
            "dataset": "tfds:svhn_cropped", "model_dir": str(tmp_path / "model"),
            "export_dir": str(tmp_path / "exports"), **TINY}))
    assert 0.0 <= results["test_error"] <= 1.0
    loaded = tf.saved_model.load(results["export_path"])
    images = tf.random.uniform([2, 32, 32, 3])
    assert loaded.signatures["classify"](images=images)["probabilities"].shape == (2, 10)
    made = loaded.signatures["generate"](labels=tf.constant([3, 4]), latent=tf.zeros([2, 3]))["images"]
    assert made.shape == (2, 32, 32, 3)


@pytest.fixture(scope="module")
def ssdgm_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssdgm")
    return experiment.run(configs.get("ssdgm_mnist", {"dataset": "digits", "model_dir": str(root / "m"),
                                                      "export_dir": str(root / "x"), **TINY}))["export_path"]


def test_figures_from_an_export(ssdgm_export, tmp_path):
    loaded = tf.saved_model.load(ssdgm_export)

    def generate(labels, latent):
        return loaded.signatures["generate"](labels=tf.constant(labels), latent=tf.constant(latent))["images"].numpy()

    def encode(images):
        return loaded.signatures["encode"](images=tf.constant(images))["mean"].numpy()

    grid = figures.class_style_grid(generate, 10, 3, num_styles=4)
    assert grid.shape == (4, 10, 8, 8, 1)
    # Along a row the style is fixed and the class changes the picture.
    assert not np.allclose(grid[0, 0], grid[0, 1])
    real = np.random.default_rng(0).uniform(size=(3, 8, 8, 1)).astype("float32")
    swapped = figures.analogies(encode, generate, real, 10)
    assert swapped.shape == (3, 11, 8, 8, 1)
    np.testing.assert_array_equal(swapped[:, 0], real)
    path = figures.save_png(str(tmp_path / "grid.png"), figures.tile(swapped), scale=2)
    assert Image.open(path).size == (2 * (11 * 9 + 1), 2 * (3 * 9 + 1))
    with pytest.raises(ValueError, match="rows, cols"):
        figures.tile(real)


@pytest.mark.parametrize("options", [dict(discrete="relax", variant="iw", num_samples=3),
                                     dict(discrete="enumerate", variant="weighted", num_samples=2, gamma=2.0)])
def test_ssdgm_options_give_finite_losses(options):
    model = models.SSDGMMnist((8, 8, 1), 10, latent_dim=3, hidden_units=(8,), **options)
    batch = {"x": tf.random.uniform([4, 8, 8, 1]), "y": tf.constant([1, 2, 3, 4]),
             "y_mask": tf.constant([True, False, True, False])}
    losses, probabilities = model.compute_losses(batch)
    assert all(np.isfinite(float(v)) for v in losses.values())
    assert probabilities.shape == (4, 10)


@pytest.mark.parametrize("options, match", [
    (dict(discrete="sample"), "discrete"), (dict(variant="mean"), "variant"),
    (dict(num_samples=0), "S >= 1"), (dict(network="rnn"), "network"), (dict(gamma=-1.0), "gamma"),
    (dict(kl_z_weight=2.0, variant="iw"), "kl_z_weight: 2.0 needs the analytic KL"),
])
def test_bad_ssdgm_options_are_value_errors(options, match):
    with pytest.raises(ValueError, match=match):
        models.SSDGM((8, 8, 1), 10, **options)
