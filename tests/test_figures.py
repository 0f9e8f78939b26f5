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


def _scene(n=3, K=2, side=12):
    """Canvases with a bright square per digit slot; count probabilities whose likeliest count is 2, 1, 0."""
    boxes = np.zeros((n, K, 4))
    boxes[:, 0] = [0.0, 0.0, 0.5, 0.5]  # top-left quarter
    boxes[:, 1] = [0.5, 0.5, 1.0, 1.0]  # bottom-right quarter
    digits = np.zeros((n, K, side, side, 1), np.float32)
    digits[:, 0, 2:4, 2:4] = 1.0
    digits[:, 1, 8:10, 8:10] = 1.0
    probabilities = np.array([[0.1, 0.2, 0.7], [0.2, 0.7, 0.1], [0.8, 0.1, 0.1]])[:n]
    canvases = digits.sum(axis=1)
    return canvases, probabilities, boxes, digits, canvases * 0.5


def test_decomposition_draws_the_boxes_of_present_steps_only(tmp_path):
    canvases, probabilities, boxes, digits, reconstructions = _scene()
    path = figures.decomposition(str(tmp_path / "d.png"), canvases, probabilities, boxes, digits, reconstructions,
                                 scale=4, pad=2)
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    # K + 2 = 4 panels of 48 pixels a row, 3 rows, 2-pixel gaps.
    assert pixels.shape == (2 + 3 * 50, 2 + 4 * 50, 3)

    def has(colour, row, column):
        top, left = 2 + row * 50, 2 + column * 50
        panel = pixels[top:top + 48, left:left + 48]
        return bool((np.abs(panel - colour).sum(axis=-1) == 0).any())

    first, second = figures.CLASS_COLOURS[:2]
    # Canvas panels: row 0 (count 2) both boxes, row 1 (count 1) the first, row 2 (count 0) none.
    assert [has(first, r, 0) for r in range(3)] == [True, True, False]
    assert [has(second, r, 0) for r in range(3)] == [True, False, False]
    # The first step's box outline runs along the panel's top-left quarter: its top edge at row 0, x 0..24.
    assert (np.abs(pixels[2, 2:2 + 24] - first).sum(axis=-1) == 0).mean() > 0.9
    # Digit panels: ink in the step's colour where present, flat grey where the count leaves the step out.
    assert has(first, 0, 1) and has(second, 0, 2) and has(first, 1, 1)
    assert (pixels[2 + 50:2 + 50 + 48, 2 + 2 * 50:2 + 2 * 50 + 48] == 128).all()
    # The reconstruction panel holds the reconstruction, grey ink of 0.5 on black.
    assert set(np.unique(pixels[2:2 + 48, 2 + 3 * 50:2 + 3 * 50 + 48])) == {0, 128}
    with pytest.raises(ValueError, match="boxes: expected shape \\(3, 2, 4\\)"):
        figures.decomposition(str(tmp_path / "e.png"), canvases, probabilities, boxes[:, :1], digits,
                              reconstructions)


def test_a_multi_digit_model_writes_its_decomposition(tmp_path):
    from tfssvae.models import MultiDigitModel, multi_digit

    model = MultiDigitModel((12, 12, 1), 3, max_digits=2, glimpse_size=6, what_dim=2, encoder_units=8,
                            lstm_units=4, what_units=8)
    canvases = np.random.default_rng(0).random((5, 12, 12, 1)).astype(np.float32)
    path = multi_digit.write_decomposition(model, canvases, str(tmp_path / "decomposition.png"), scale=3)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (2 + 4 * (36 + 2), 2 + 5 * (36 + 2))  # (width, height)
