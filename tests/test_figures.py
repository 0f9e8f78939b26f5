"""figures.class_effect measures how much a decoder's image depends on the class."""
import numpy as np

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
