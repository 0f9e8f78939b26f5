"""Tests for tfssvae.data.sprites: the procedural dSprites renderer and its sources."""
import hashlib
import itertools

import numpy as np
import pytest

from tfssvae.data import sprites

SIZE = sprites.IMAGE_SIZE
# Pixels per x/y index step: the centre moves 0.6 * 64 pixels over 31 steps.
STEP = 0.6 * SIZE / 31


# ----------------------------------------------------------------------------- helpers

def one(shape=0, scale=5, orientation=0, x=16, y=16):
    """Renders a single sprite; returns a float32 [64, 64] image."""
    return sprites.render(np.array([[shape, scale, orientation, x, y]]))[0, :, :, 0]


def centroid(image):
    """(row, column) centroid of the lit pixels' centres, in pixels."""
    rows, cols = np.nonzero(image)
    return rows.mean() + 0.5, cols.mean() + 0.5


def expected_centre(index):
    """Pixel coordinate of the sprite centre for an x or y index."""
    return SIZE * (0.2 + 0.6 * sprites.X_VALUES[index])


def differing(a, b):
    return int(np.count_nonzero(a != b))


# ------------------------------------------------------------------------ value tables

def test_factor_tables():
    assert sprites.FACTOR_NAMES == ("shape", "scale", "orientation", "x", "y")
    assert sprites.FACTOR_SIZES == (3, 6, 40, 32, 32)
    assert sprites.NUM_COMBINATIONS == 737_280
    assert [len(v) for v in sprites.FACTOR_VALUES] == list(sprites.FACTOR_SIZES)
    np.testing.assert_allclose(sprites.SCALE_VALUES[[0, -1]], [0.5, 1.0])
    # 2 pi is left out so no two orientation indices are the same rotation.
    np.testing.assert_allclose(np.diff(sprites.ORIENTATION_VALUES), 2 * np.pi / 40)
    assert sprites.ORIENTATION_VALUES[0] == 0.0
    np.testing.assert_allclose(sprites.X_VALUES[[0, -1]], [0.0, 1.0])


def test_render_output_format():
    images = sprites.render(np.zeros([3, 5], dtype=np.int32))
    assert images.shape == (3, 64, 64, 1)
    assert images.dtype == np.float32
    assert set(np.unique(images)) == {0.0, 1.0}


# --------------------------------------------------------------------------- geometry

def test_shapes_are_pairwise_distinct():
    for scale, orientation in [(5, 0), (2, 13), (0, 31)]:
        images = [one(shape, scale, orientation, 9, 20) for shape in range(3)]
        for a, b in itertools.combinations(range(3), 2):
            # Even the smallest sprites (about 60 pixels) differ clearly.
            assert differing(images[a], images[b]) >= 10, (scale, orientation, a, b)


def test_square_has_the_expected_size():
    # At scale 1 and orientation 0 the square is 16x16 pixels.
    image = one(shape=0, scale=5, orientation=0)
    rows, cols = np.nonzero(image)
    assert rows.max() - rows.min() + 1 == 16
    assert cols.max() - cols.min() + 1 == 16
    assert image.sum() == 256


@pytest.mark.parametrize("shape", [0, 1, 2])
def test_scale_grows_area_as_scale_squared(shape):
    counts = np.array([one(shape, scale, 3).sum() for scale in range(6)])
    assert np.all(np.diff(counts) > 0), counts
    ratios = counts / counts[-1]
    np.testing.assert_allclose(ratios, sprites.SCALE_VALUES ** 2, rtol=0.12)


def test_square_repeats_every_quarter_turn_and_heart_does_not():
    for shape, period in [(0, 10), (1, 20)]:  # square 90 degrees, ellipse 180
        base = one(shape, 5, 3)
        assert differing(base, one(shape, 5, 3 + period)) <= 2
        assert differing(base, one(shape, 5, 3 + period // 2)) > 20
    heart = one(2, 5, 0)
    for orientation in (5, 10, 20, 30):
        assert differing(heart, one(2, 5, orientation)) > 20, orientation


def test_orientation_turns_counter_clockwise():
    # The ellipse's long axis starts horizontal; after 45 degrees counter-clockwise
    # its lit pixels lie along the rising diagonal: up (smaller row) when right. For
    # semi-axes a, b the correlation is -(a^2 - b^2) / (a^2 + b^2) = -0.55.
    rows, cols = np.nonzero(one(shape=1, scale=5, orientation=5))
    assert np.corrcoef(rows, cols)[0, 1] < -0.45
    rows, cols = np.nonzero(one(shape=1, scale=5, orientation=15))  # 135 degrees
    assert np.corrcoef(rows, cols)[0, 1] > 0.45
    rows, cols = np.nonzero(one(shape=1, scale=5, orientation=0))
    assert np.ptp(cols) > 1.6 * np.ptp(rows)
    # The heart is upright at orientation 0: its tip (one pixel wide) is at the bottom.
    rows, cols = np.nonzero(one(shape=2, scale=5, orientation=0))
    assert np.count_nonzero(rows == rows.max()) < np.count_nonzero(rows == rows.min())


def test_rotation_keeps_the_centroid_in_place():
    # Pixel sampling moves the centroid by at most half a pixel (an axis-aligned
    # square's edges snap to whole pixels); an off-centre heart would be 2 pixels off.
    for shape, scale in itertools.product(range(3), (0, 5)):
        centres = np.array([centroid(one(shape, scale, orientation, 7, 23))
                            for orientation in range(40)])
        np.testing.assert_allclose(centres[:, 0], expected_centre(23), atol=0.5)
        np.testing.assert_allclose(centres[:, 1], expected_centre(7), atol=0.5)


@pytest.mark.parametrize("column, name", [(3, "x"), (4, "y")])
def test_position_moves_the_centroid(column, name):
    factors = np.tile([2, 3, 7, 12, 12], (32, 1))
    factors[:, column] = np.arange(32)
    centres = np.array([centroid(image[:, :, 0]) for image in sprites.render(factors)])
    moving = centres[:, 1] if name == "x" else centres[:, 0]
    still = centres[:, 0] if name == "x" else centres[:, 1]
    assert np.all(np.diff(moving) > 0), name
    np.testing.assert_allclose(np.diff(moving), STEP, atol=0.4)
    np.testing.assert_allclose(moving, expected_centre(np.arange(32)), atol=0.35)
    assert np.ptp(still) < 0.5


def reference_image(shape, scale, orientation, x, y):
    """Full-canvas float64 rendering of a square or ellipse from the documented
    geometry (independent of the module's per-sprite window), [64, 64]."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    dx, dy = cols - expected_centre(x), expected_centre(y) - rows
    angle = sprites.ORIENTATION_VALUES[orientation]
    unit = 8.0 * sprites.SCALE_VALUES[scale]  # pixels per frame unit
    u = (np.cos(angle) * dx + np.sin(angle) * dy) / unit
    v = (np.cos(angle) * dy - np.sin(angle) * dx) / unit
    if shape == 0:
        return np.maximum(np.abs(u), np.abs(v)) <= 1.0
    return (u / 1.4) ** 2 + (v / 0.75) ** 2 <= 1.0


@pytest.mark.parametrize("shape, scale", [(0, 5), (0, 1), (1, 5)])
def test_render_matches_the_documented_geometry(shape, scale):
    # Every orientation at 32 positions: the far tips of the rotated square (11.3
    # pixels from the centre) must not be cut off by the renderer's window.
    factors = [(shape, scale, orientation, x, (7 * x + orientation) % 32)
               for orientation in range(40) for x in range(32)]
    images = sprites.render(np.array(factors))[..., 0]
    expected = np.stack([reference_image(*f) for f in factors])
    wrong = np.count_nonzero(images != expected, axis=(1, 2))
    # float32 against float64 arithmetic may flip a pixel lying on an edge.
    assert wrong.max() <= 1 and wrong.sum() <= 5, wrong.sum()


def test_largest_sprites_stay_inside_the_canvas():
    corners = [(0, 0), (0, 31), (31, 0), (31, 31)]
    factors = np.array([[shape, 5, orientation, x, y]
                        for shape in range(3) for orientation in range(40)
                        for x, y in corners])
    images = sprites.render(factors)[..., 0]
    border = np.ones([SIZE, SIZE], dtype=bool)
    border[1:-1, 1:-1] = False
    assert not images[:, border].any()
    # Nothing is clipped: the sprite has the same area as in the middle of the canvas.
    middle = factors.copy()
    middle[:, 3:] = 16
    counts = images.sum(axis=(1, 2))
    middle_counts = sprites.render(middle)[..., 0].sum(axis=(1, 2))
    np.testing.assert_allclose(counts, middle_counts, rtol=0.05)


def test_small_grid_renders_unique_images():
    # A square at orientations 90 degrees apart (10 indices) and an ellipse at
    # orientations 180 degrees apart (20 indices) are the same figure, so their images
    # legitimately coincide (up to a rounding pixel); keep one orientation of each
    # such class. The heart has no rotational symmetry.
    periods = {0: 10, 1: 20, 2: 40}
    kept, seen = [], set()
    for shape, scale, orientation, x, y in itertools.product(
            range(3), (0, 5), (0, 7, 10, 25), (0, 10, 21, 31), (0, 10, 21, 31)):
        key = (shape, scale, orientation % periods[shape], x, y)
        if key not in seen:
            seen.add(key)
            kept.append((shape, scale, orientation, x, y))
    assert len(kept) == (3 + 4 + 4) * 2 * 16  # the square loses orientation 10
    images = sprites.render(np.array(kept)).astype(np.uint8)
    hashes = {hashlib.sha1(image.tobytes()).hexdigest() for image in images}
    assert len(hashes) == len(kept)


def test_neighbouring_factor_values_give_different_images():
    # One index step of any factor changes the image, even for the smallest sprite.
    base = np.array([1, 0, 11, 15, 15])
    for column in range(5):
        other = base.copy()
        other[column] += 1
        assert differing(one(*base), one(*other)) > 0, sprites.FACTOR_NAMES[column]


def test_every_combination_renders():
    indices = np.concatenate([np.arange(0, sprites.NUM_COMBINATIONS, 97),
                              [sprites.NUM_COMBINATIONS - 1]])
    factors = sprites.factors_from_index(indices)
    images = sprites.render(factors)[..., 0]
    counts = images.sum(axis=(1, 2))
    assert counts.min() > 30
    assert not images[:, [0, -1], :].any() and not images[:, :, [0, -1]].any()
    # Rendering is deterministic and independent of batching (chunks of 4096).
    for row in (0, 4095, 4096, len(indices) - 1):
        np.testing.assert_array_equal(images[row],
                                      sprites.render(factors[row:row + 1])[0, :, :, 0])
    np.testing.assert_array_equal(sprites.render(factors[:50]), sprites.render(
        factors[:50]))


# ---------------------------------------------------------------------------- indices

def test_index_factor_round_trip():
    rng = np.random.default_rng(0)
    last = sprites.NUM_COMBINATIONS - 1
    indices = np.concatenate([[0, last], rng.integers(0, last + 1, 1000)])
    factors = sprites.factors_from_index(indices)
    assert factors.shape == (1002, 5)
    np.testing.assert_array_equal(factors[0], [0, 0, 0, 0, 0])
    np.testing.assert_array_equal(factors[1], np.array(sprites.FACTOR_SIZES) - 1)
    np.testing.assert_array_equal(sprites.index_from_factors(factors), indices)
    # Shape slowest, y fastest: the row-major order of the factor grid.
    np.testing.assert_array_equal(
        indices, np.ravel_multi_index(factors.T, sprites.FACTOR_SIZES))
    np.testing.assert_array_equal(sprites.factors_from_index([1, 32, 1024]),
                                  [[0, 0, 0, 0, 1], [0, 0, 0, 1, 0], [0, 0, 1, 0, 0]])


def test_factor_values_lookup():
    values = sprites.factor_values([[2, 5, 10, 31, 0]])
    np.testing.assert_allclose(values, [[2.0, 1.0, np.pi / 2, 1.0, 0.0]])


# --------------------------------------------------------------------------- sampling

@pytest.mark.parametrize("fixed, column, value", [
    ({"shape": 2}, 0, 2),
    ((3, 7), 3, 7),
    (("orientation", 39), 2, 39),
])
def test_sample_factors_with_a_fixed_factor(fixed, column, value):
    factors = sprites.sample_factors(np.random.default_rng(1), 20000, fixed=fixed)
    assert factors.shape == (20000, 5)
    assert np.all(factors[:, column] == value)
    for other, size in enumerate(sprites.FACTOR_SIZES):
        if other == column:
            continue
        counts = np.bincount(factors[:, other], minlength=size)
        assert len(counts) == size
        expected = 20000 / size
        assert np.all(np.abs(counts - expected) < 0.25 * expected), (other, counts)


def test_sample_factors_is_seeded():
    a = sprites.sample_factors(np.random.default_rng(5), 64)
    b = sprites.sample_factors(np.random.default_rng(5), 64)
    c = sprites.sample_factors(np.random.default_rng(6), 64)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(sprites.sample_factors(5, 64), a)


# ---------------------------------------------------------------------------- tf.data

def test_sprites_dataset_batches():
    dataset = sprites.sprites_dataset(batch_size=8, seed=3, num_batches=3)
    batches = [{k: v.numpy() for k, v in b.items()} for b in dataset]
    assert len(batches) == 3
    for batch in batches:
        assert set(batch) == {"x", "factors", "y", "y_mask"}
        assert batch["x"].shape == (8, 64, 64, 1) and batch["x"].dtype == np.float32
        assert batch["factors"].shape == (8, 5) and batch["factors"].dtype == np.int32
        assert batch["y"].shape == (8,) and batch["y"].dtype == np.int32
        assert batch["y_mask"].shape == (8,) and batch["y_mask"].dtype == bool
        assert not batch["y_mask"].any()
        np.testing.assert_array_equal(batch["y"], batch["factors"][:, 0])
        np.testing.assert_array_equal(batch["x"], sprites.render(batch["factors"]))
    assert not np.array_equal(batches[0]["factors"], batches[1]["factors"])
    spec = dataset.element_spec
    assert spec["x"].shape.as_list() == [8, 64, 64, 1]

    # Deterministic per seed: iterating again, or building it again, gives the same.
    again = [b["factors"].numpy() for b in sprites.sprites_dataset(8, 3, 3)]
    for batch, factors in zip(batches, again):
        np.testing.assert_array_equal(batch["factors"], factors)
    other = next(iter(sprites.sprites_dataset(8, 4, 3)))["factors"].numpy()
    assert not np.array_equal(other, batches[0]["factors"])


def test_sprites_dataset_is_endless_by_default():
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    dataset = sprites.sprites_dataset(batch_size=2, seed=0)
    assert dataset.cardinality().numpy() == tf.data.INFINITE_CARDINALITY
    first = [b["factors"].numpy() for b in dataset.take(3)]
    limited = [b["factors"].numpy() for b in sprites.sprites_dataset(2, 0, 3)]
    np.testing.assert_array_equal(np.stack(first), np.stack(limited))


# ------------------------------------------------------------------------- npz loader

def write_dsprites_npz(path, indices, **drop):
    """Writes an npz in the original dSprites layout for the given flat indices."""
    factors = sprites.factors_from_index(np.asarray(indices))
    arrays = {
        "imgs": sprites.render(factors)[..., 0].astype(np.uint8),
        "latents_classes": np.concatenate(
            [np.zeros([len(factors), 1], dtype=np.int64), factors], axis=1),
        "latents_values": np.concatenate(
            [np.ones([len(factors), 1]), sprites.factor_values(factors)], axis=1),
    }
    for key in drop:
        del arrays[key]
    np.savez(path, **arrays)
    return arrays


def test_load_dsprites_npz_round_trip(tmp_path):
    path = tmp_path / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
    indices = [0, 1, 5000, 300_000, sprites.NUM_COMBINATIONS - 1]
    arrays = write_dsprites_npz(path, indices)
    images, factors = sprites.load_dsprites_npz(path)
    assert images.shape == (5, 64, 64, 1) and images.dtype == np.uint8
    assert factors.shape == (5, 5) and factors.dtype == np.int32
    np.testing.assert_array_equal(images[..., 0], arrays["imgs"])
    np.testing.assert_array_equal(sprites.index_from_factors(factors), indices)
    np.testing.assert_array_equal(images.astype(np.float32),
                                  sprites.render(factors))


def test_load_dsprites_npz_rejects_bad_files(tmp_path):
    path = tmp_path / "a.npz"
    write_dsprites_npz(path, [0, 1], imgs=True)
    with pytest.raises(ValueError, match=r"lacks the array\(s\) \['imgs'\]"):
        sprites.load_dsprites_npz(path)
    write_dsprites_npz(path, [0, 1], imgs=True, latents_classes=True)
    with pytest.raises(ValueError, match="'imgs', 'latents_classes'"):
        sprites.load_dsprites_npz(path)
    np.savez(path, imgs=np.zeros([3, 64, 64], np.uint8),
             latents_classes=np.zeros([2, 6], np.int64))
    with pytest.raises(ValueError, match="same number of rows"):
        sprites.load_dsprites_npz(path)
    np.savez(path, imgs=np.zeros([2, 32, 32], np.uint8),
             latents_classes=np.zeros([2, 6], np.int64))
    with pytest.raises(ValueError, match=r"'imgs' must have shape \[N, 64, 64\]"):
        sprites.load_dsprites_npz(path)
    np.savez(path, imgs=np.zeros([2, 64, 64], np.uint8),
             latents_classes=np.zeros([2, 5], np.int64))
    with pytest.raises(ValueError, match=r"'latents_classes' must have shape \[N, 6\]"):
        sprites.load_dsprites_npz(path)
    classes = np.zeros([2, 6], np.int64)
    classes[1, 3] = 40
    np.savez(path, imgs=np.zeros([2, 64, 64], np.uint8), latents_classes=classes)
    with pytest.raises(ValueError, match="'orientation'"):
        sprites.load_dsprites_npz(path)


# ----------------------------------------------------------------------- TFDS builder

def test_tfds_builder_info_and_examples(tmp_path):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    builder_class = sprites.ProceduralSprites
    assert builder_class is sprites.sprites_builder()
    assert builder_class.name == "procedural_sprites"
    assert str(builder_class.VERSION) == "1.0.0"
    assert builder_class.MAX_EXAMPLES is None

    class TinySprites(builder_class, skip_registration=True):
        MAX_EXAMPLES = 50

    builder = TinySprites(data_dir=str(tmp_path))
    features = builder.info.features
    assert features["image"].shape == (64, 64, 1)
    sizes = {"label_shape": 3, "label_scale": 6, "label_orientation": 40,
             "label_x_position": 32, "label_y_position": 32}
    for key, size in sizes.items():
        assert isinstance(features[key], tfds.features.ClassLabel)
        assert features[key].num_classes == size
    assert features["label_shape"].names == ["square", "ellipse", "heart"]

    builder.download_and_prepare()
    assert builder.info.splits["train"].num_examples == 50
    examples = list(tfds.as_numpy(builder.as_dataset(split="train")))
    assert len(examples) == 50
    keys = list(sizes)
    factors = np.array([[example[key] for key in keys] for example in examples])
    indices = sprites.index_from_factors(factors)
    # The first 50 combinations, each once (TFDS stores them in hashed-key order).
    np.testing.assert_array_equal(np.sort(indices), np.arange(50))
    images = np.stack([example["image"] for example in examples])
    assert images.dtype == np.uint8
    np.testing.assert_array_equal(images.astype(np.float32), sprites.render(factors))
    np.testing.assert_allclose(
        [examples[0]["value_" + k[len("label_"):]] for k in keys],
        sprites.factor_values(factors[:1])[0], rtol=1e-6)


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("factors, match", [
    (np.zeros([5], np.int64), r"shape \[batch, 5\]"),
    (np.zeros([2, 4], np.int64), r"shape \[batch, 5\]"),
    (np.zeros([0, 5], np.int64), "batch >= 1"),
    (np.zeros([2, 5], np.float32), "integer"),
    ([[0, 0, 40, 0, 0]], r"'orientation' \(column 2\) must be in \[0, 40\)"),
    ([[3, 0, 0, 0, 0]], "'shape'"),
    ([[0, 0, 0, 0, -1]], "'y'"),
])
def test_render_rejects_bad_factors(factors, match):
    with pytest.raises(ValueError, match=match):
        sprites.render(factors)
    with pytest.raises(ValueError, match=match):
        sprites.index_from_factors(factors)


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="indices must be in"):
        sprites.factors_from_index([sprites.NUM_COMBINATIONS])
    with pytest.raises(ValueError, match="indices must be integers"):
        sprites.factors_from_index([1.0])
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        sprites.sample_factors(rng, 0)
    with pytest.raises(ValueError, match="unknown factor name 'colour'"):
        sprites.sample_factors(rng, 4, fixed={"colour": 0})
    with pytest.raises(ValueError, match=r"'scale' must be an int in \[0, 6\)"):
        sprites.sample_factors(rng, 4, fixed={"scale": 6})
    with pytest.raises(ValueError, match="position in"):
        sprites.sample_factors(rng, 4, fixed=(5, 0))
    with pytest.raises(ValueError, match="pair"):
        sprites.sample_factors(rng, 4, fixed=(0, 1, 2))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        sprites.sprites_dataset(0, seed=0)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        sprites.sprites_dataset(4, seed=-1)
    with pytest.raises(ValueError, match="num_batches must be >= 1"):
        sprites.sprites_dataset(4, seed=0, num_batches=0)
