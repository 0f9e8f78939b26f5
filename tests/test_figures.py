"""Figures: figures.class_effect measures how much a decoder's image depends on the class; line charts."""
import numpy as np
import pytest
from PIL import Image

from tfssvae import figures

K, PIXELS = 4, 36


def _prototypes():
    # Four distinct binary patterns, one per class.
    return (np.random.default_rng(0).random((K, PIXELS)) > 0.5).astype(np.float32)


def _images(classes):
    noise = np.random.default_rng(1).random((len(classes), PIXELS)) < 0.05
    return np.abs(_prototypes()[classes] - noise).reshape(-1, 6, 6, 1).astype(np.float32)


def test_a_decoder_that_ignores_the_class_has_no_effect():
    classes = np.arange(20) % K
    images = _images(classes)

    def generate(labels, latent):  # the class is ignored: every rendering is the same grey
        return np.full((len(labels), 6, 6, 1), 0.4, np.float32)

    effect = figures.class_effect(lambda x: (np.zeros((len(x), 2)), classes), generate, images, K)
    # Identical renderings: equal likelihoods, up to float64 rounding of the others' mean.
    assert abs(effect["gap_nats"]) < 1e-9


def test_a_decoder_that_draws_the_class_prototype_has_a_large_effect():
    classes = np.arange(20) % K
    images = _images(classes)

    def generate(labels, latent):  # class k renders prototype k, softened
        return (0.1 + 0.8 * _prototypes()[labels]).reshape(-1, 6, 6, 1)

    effect = figures.class_effect(lambda x: (np.zeros((len(x), 2)), classes), generate, images, K)
    assert effect["own_class_best"] == 1.0
    # A pixel that disagrees with the rendering costs log(0.9 / 0.1) = 2.2 nats, and random
    # prototypes disagree on about half of the 36 pixels: far more than 10 nats in all.
    assert effect["gap_nats"] > 10.0
    wrong = figures.class_effect(lambda x: (np.zeros((len(x), 2)), (classes + 1) % K), generate, images, K)
    assert wrong["own_class_best"] == 0.0 and wrong["gap_nats"] < 0


def test_traversal_sweeps_one_dimension_per_row_for_each_code():
    latent_dim, discrete_size, values = 3, 2, np.array([-1.0, 0.0, 2.0])

    def generate(latent, d):  # an "image" that shows its inputs: 3 latent pixels, then d
        return np.concatenate([latent, d[:, None].astype(np.float32)], axis=1).reshape(-1, 1, 4, 1)

    grid = figures.traversal(generate, latent_dim, discrete_size, values)
    assert grid.shape == (discrete_size * latent_dim, len(values), 1, 4, 1)
    for row in range(discrete_size * latent_dim):
        d, dim = divmod(row, latent_dim)
        pixels = grid[row, :, 0, :, 0]  # [values, 4]
        np.testing.assert_array_equal(pixels[:, dim], values)  # the swept dimension
        np.testing.assert_array_equal(np.delete(pixels[:, :latent_dim], dim, axis=1), 0.0)  # the others at 0
        np.testing.assert_array_equal(pixels[:, latent_dim], d)


def test_line_chart_draws_each_series_where_its_values_are(tmp_path):
    path = figures.line_chart(str(tmp_path / "c.png"), [0, 10, 20], {"low": [0.25] * 3, "high": [0.75] * 3},
                              title="t", size=(400, 300))
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert pixels.shape == (300, 400, 3)

    def rows_of(colour):
        return np.flatnonzero((np.abs(pixels - colour).sum(axis=-1) == 0).any(axis=1))

    # Plot area rows 30..260: value v sits at row 260 - v * 230 (the legend sits near the top).
    low, high = rows_of(figures.COLOURS[0]), rows_of(figures.COLOURS[1])
    assert abs(np.median(low) - (260 - 0.25 * 230)) <= 4 and abs(np.median(high) - (260 - 0.75 * 230)) <= 4
    with pytest.raises(ValueError, match="2 values for 3 steps"):
        figures.line_chart(str(tmp_path / "d.png"), [0, 1, 2], {"a": [0.1, 0.2]})
