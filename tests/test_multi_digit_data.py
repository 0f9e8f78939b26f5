"""Tests for tfssvae.data.multi_digit: the canvas composer, its sources and checks."""
import os

import numpy as np
import pytest
import tensorflow as tf

from tfssvae import spatial
from tfssvae.data import load_source
from tfssvae.data import multi_digit as md


@pytest.fixture(scope="module")
def digits():
    return load_source("digits")


@pytest.fixture(scope="module")
def composer(digits):
    return md.MultiDigitComposer.from_source(digits)


def pixel_centres_in_boxes(boxes, present, size):
    """bool [batch, size, size]: pixel centre inside some present box."""
    centres = (np.arange(size) + 0.5) / size
    rows = ((centres >= boxes[..., 0, None]) & (centres <= boxes[..., 2, None]))
    cols = ((centres >= boxes[..., 1, None]) & (centres <= boxes[..., 3, None]))
    inside = rows[..., :, None] & cols[..., None, :] & present[..., None, None]
    return inside.any(axis=1)


def write_idx(path, array):
    """Writes a uint8 array in idx format (type 0x08)."""
    header = bytes([0, 0, 0x08, array.ndim])
    header += np.array(array.shape, ">u4").tobytes()
    with open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def write_idx_directory(directory, height, width, seed=0):
    rng = np.random.default_rng(seed)
    for prefix, count in (("train", 12), ("t10k", 6)):
        write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte"),
                  rng.integers(0, 256, size=(count, height, width)))
        write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte"),
                  np.arange(count) % 3)


# ---------------------------------------------------------------------- batch format

def test_sample_shapes_dtypes_and_ranges(composer):
    batch = composer.sample(0, 40)
    k = md.MAX_DIGITS
    expected = {"x": ((40, 50, 50, 1), np.float32), "count": ((40,), np.int32),
                "boxes": ((40, k, 4), np.float32), "classes": ((40, k), np.int32),
                "present": ((40, k), np.bool_), "overlap": ((40,), np.bool_),
                "box_overlap": ((40, k, k), np.float32), "index": ((40, k), np.int32)}
    assert set(batch) == set(expected)
    for key, (shape, dtype) in expected.items():
        assert batch[key].shape == shape and batch[key].dtype == dtype, key
    assert batch["x"].min() >= 0.0 and batch["x"].max() <= 1.0
    # Uniform counts over 0..3: 40 canvases see every count.
    assert set(batch["count"].tolist()) == {0, 1, 2, 3}


def test_labels_agree_with_the_canvas(composer, digits):
    batch = composer.sample(1, 64)
    present, boxes, count = batch["present"], batch["boxes"], batch["count"]
    # count = number of present slots, present slots first.
    np.testing.assert_array_equal(present.sum(axis=1), count)
    np.testing.assert_array_equal(present, np.arange(3) < count[:, None])
    # Absent slots are masked with zeros, never a magic value.
    assert np.all(boxes[~present] == 0) and np.all(batch["classes"][~present] == 0)
    # Classes are the source labels of the drawn digits.
    np.testing.assert_array_equal(batch["classes"][present],
                                  digits.train_labels[batch["index"][present]])
    # Boxes: square, inside the canvas, sides within digit_sizes.
    live = boxes[present]
    sides = (live[:, 2:] - live[:, :2]) * 50
    np.testing.assert_allclose(sides[:, 0], sides[:, 1], atol=1e-4)  # float32 boxes
    assert sides.min() >= 20 - 1e-4 and sides.max() <= 28 + 1e-4
    assert live.min() >= 0.0 and live.max() <= 1.0
    # Ink only at pixels whose centres lie in some present box; blank canvases blank.
    ink = batch["x"][..., 0] > 0
    assert not np.any(ink & ~pixel_centres_in_boxes(boxes, present, 50))
    assert np.all(batch["x"][count == 0] == 0)
    # Every present digit's box holds ink.
    for b, k in zip(*np.nonzero(present)):
        inside = pixel_centres_in_boxes(boxes[b:b + 1, k:k + 1], present[b:b + 1, k:k + 1],
                                        50)[0]
        assert batch["x"][b, ..., 0][inside].max() > 0.3, (b, k)


def test_single_digit_lies_in_its_own_box(digits):
    composer = md.MultiDigitComposer.from_source(digits, max_digits=1)
    batch = composer.sample(2, 32, counts=np.ones(32, np.int64))
    inside = pixel_centres_in_boxes(batch["boxes"], batch["present"], 50)
    assert np.all(batch["x"][..., 0][~inside] == 0)
    assert not batch["overlap"].any() and np.all(batch["box_overlap"] == 0)


def test_spatial_transformer_reads_a_digit_back_from_its_box(digits):
    # An 8x8 digit in a 24-pixel box at whole-pixel offsets: each digit pixel covers
    # 3x3 canvas pixels, and the 8x8 glimpse at boxes_to_where(box) samples the centre
    # one, which the composer rendered at the digit pixel's exact value.
    digit = digits.train_images[5, :, :, 0]
    boxes = np.array([[[10, 17, 34, 41]]], np.float64) / 50
    canvas, _ = md.compose(digit[None, None], boxes, [[True]], 50)
    where = spatial.boxes_to_where(boxes[:, 0].astype(np.float32))
    glimpse = spatial.read_glimpse(canvas, where, 8).numpy()[0, :, :, 0]
    # Float32 coordinates: ~1e-5 off a pixel centre, times slopes <= 1 per pixel.
    np.testing.assert_allclose(glimpse, digit, atol=1e-4)


def test_compose_by_sum_and_by_max():
    ones = np.full([1, 2, 4, 4], 0.7, np.float32)
    boxes = np.array([[[0.0, 0.0, 0.6, 0.6], [0.4, 0.4, 1.0, 1.0]]])
    summed, overlap = md.compose(ones, boxes, [[True, True]], 10, "sum")
    maxed, _ = md.compose(ones, boxes, [[True, True]], 10, "max")
    assert overlap.tolist() == [True]
    # Rows/columns 4 and 5 are in both boxes: 0.7 + 0.7 clipped to 1, or max 0.7.
    np.testing.assert_allclose(summed[0, 4:6, 4:6, 0], 1.0)
    np.testing.assert_allclose(maxed[0, 4:6, 4:6, 0], 0.7)
    np.testing.assert_allclose(summed[0, :4, :4, 0], 0.7)
    np.testing.assert_allclose(maxed[0, :4, :4, 0], 0.7)


def test_overlap_flag_and_areas_on_constructed_cases():
    digits = np.ones([3, 3, 8, 8], np.float32)
    boxes = np.array([
        # touching edges, no shared pixel centre: no overlap
        [[0.0, 0.0, 0.5, 0.5], [0.0, 0.5, 0.5, 1.0], [0, 0, 0, 0]],
        # a 0.1 x 0.2 region shared by slots 0 and 1 (and slot 2 is absent)
        [[0.0, 0.0, 0.5, 0.5], [0.3, 0.4, 0.8, 0.9], [0.2, 0.2, 0.4, 0.4]],
        # boxes overlap but the second digit is blank there: no ink overlap
        [[0.0, 0.0, 0.5, 0.5], [0.3, 0.3, 0.8, 0.8], [0, 0, 0, 0]],
    ])
    digits[2, 1, :4, :] = 0.0  # the second digit's top half is blank
    present = np.array([[True, True, False], [True, True, False], [True, True, False]])
    _, overlap = md.compose(digits, boxes, present, 20)
    assert overlap.tolist() == [False, True, False]
    areas = md.box_overlaps(boxes, present)
    np.testing.assert_allclose(areas[1], [[0, 0.02, 0], [0.02, 0, 0], [0, 0, 0]],
                               atol=1e-7)
    np.testing.assert_allclose(areas[0], 0.0)
    assert areas[2, 0, 1] > 0  # the boxes overlap although the ink does not


def test_sample_is_deterministic_for_a_seed(composer):
    first, second = composer.sample(7, 16), composer.sample(7, 16)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    other = composer.sample(8, 16)
    assert not np.array_equal(first["x"], other["x"])


def test_requested_counts_and_count_probs(digits):
    composer = md.MultiDigitComposer.from_source(digits, count_probs=[0, 0, 0, 1])
    assert np.all(composer.sample(0, 10)["count"] == 3)
    batch = composer.sample(0, 4, counts=[0, 1, 2, 3])
    assert batch["count"].tolist() == [0, 1, 2, 3]


def test_idx_source_and_canvas_size(tmp_path):
    write_idx_directory(str(tmp_path), 12, 12)
    composer = md.MultiDigitComposer.from_source(
        f"idx:{tmp_path}", split="test", canvas_size=30, max_digits=2,
        digit_sizes=(10, 14), composition="max")
    batch = composer.sample(0, 5)
    assert batch["x"].shape == (5, 30, 30, 1) and batch["boxes"].shape == (5, 2, 4)
    assert batch["classes"].max() <= 2


# --------------------------------------------------------------------------- tf.data

def test_dataset_batches_and_determinism(composer):
    dataset = md.multi_digit_dataset(composer, batch_size=6, seed=3, num_batches=2)
    spec = dataset.element_spec
    assert spec["x"].shape == (6, 50, 50, 1) and spec["x"].dtype == tf.float32
    assert spec["count"].dtype == tf.int32 and spec["classes"].dtype == tf.int32
    assert spec["boxes"].shape == (6, 3, 4) and spec["present"].dtype == tf.bool
    batches = list(dataset.as_numpy_iterator())
    assert len(batches) == 2
    again = list(md.multi_digit_dataset(composer, 6, 3, 2).as_numpy_iterator())
    for a, b in zip(batches, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    # Batch i is composer.sample seeded by (seed, i).
    np.testing.assert_array_equal(batches[1]["x"],
                                  composer.sample(np.random.default_rng([3, 1]), 6)["x"])
    assert not np.array_equal(batches[0]["x"], batches[1]["x"])


def test_source_epochs_resume(composer):
    source = md.MultiDigitSource(composer, batch_size=4, seed=1, steps_per_epoch=3)
    full = list(source.epoch(2).as_numpy_iterator())
    resumed = list(source.epoch(2, skip_steps=2).as_numpy_iterator())
    assert len(full) == 3 and len(resumed) == 1
    np.testing.assert_array_equal(full[2]["x"], resumed[0]["x"])


# ----------------------------------------------------------------------- TFDS builder

def test_tfds_builder_info_and_examples(tmp_path, composer):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    builder_class = md.MultiDigitCanvases
    assert builder_class is md.multi_digit_builder()
    assert builder_class.name == "multi_digit_canvases"
    assert builder_class.MAX_EXAMPLES is None

    class TinyCanvases(builder_class, skip_registration=True):
        MAX_EXAMPLES = 6

    builder = TinyCanvases(data_dir=str(tmp_path))
    features = builder.info.features
    assert features["image"].shape == (50, 50, 1)
    assert features["count"].num_classes == 4
    assert features["boxes"].shape == (3, 4)
    builder.download_and_prepare()
    assert builder.info.splits["train"].num_examples == 6
    assert builder.info.splits["test"].num_examples == 6
    examples = sorted(tfds.as_numpy(builder.as_dataset(split="train")),
                      key=lambda e: e["image"].tobytes())
    # The builder's first chunk is composer.sample seeded by (SEED, split 0, chunk 0).
    expected = composer.sample(np.random.default_rng([0, 0, 0]), 6)
    images = np.round(255 * expected["x"]).astype(np.uint8)
    order = sorted(range(6), key=lambda i: images[i].tobytes())
    for example, row in zip(examples, order):
        np.testing.assert_array_equal(example["image"], images[row])
        assert example["count"] == expected["count"][row]
        np.testing.assert_array_equal(example["boxes"], expected["boxes"][row])
        np.testing.assert_array_equal(example["classes"], expected["classes"][row])
        np.testing.assert_array_equal(example["present"], expected["present"][row])
        assert example["overlap"] == expected["overlap"][row]


# --------------------------------------------------------------------------- bad input

def test_bad_inputs_raise_clear_errors(digits, tmp_path):
    images, labels = digits.train_images, digits.train_labels
    with pytest.raises(ValueError, match="canvas_size 20 is smaller than a digit"):
        md.MultiDigitComposer(images, labels, canvas_size=20)
    with pytest.raises(ValueError, match="max_digits must be >= 1; received 0"):
        md.MultiDigitComposer(images, labels, max_digits=0)
    with pytest.raises(ValueError, match="must be square; received 8x6"):
        md.MultiDigitComposer(images[:, :, :6], labels)
    write_idx_directory(str(tmp_path), 10, 12)
    with pytest.raises(ValueError, match=r"images of 10x12 .*need square digits"):
        md.MultiDigitComposer.from_source(f"idx:{tmp_path}")
    with pytest.raises(ValueError, match=r"counts must be in 0..3 \(max_digits\); "
                                         r"received 4 at index 1"):
        md.check_counts([1, 4], 3)
    composer = md.MultiDigitComposer(images, labels)
    with pytest.raises(ValueError, match="received 5 at index 0"):
        composer.sample(0, 2, counts=[5, 0])
    with pytest.raises(ValueError, match="counts must have shape"):
        composer.sample(0, 3, counts=[1, 0])
    with pytest.raises(ValueError, match="composition must be one of"):
        md.MultiDigitComposer(images, labels, composition="mean")
    with pytest.raises(ValueError, match="count_probs must be 4 non-negative"):
        md.MultiDigitComposer(images, labels, count_probs=[0.5, 0.5])
    with pytest.raises(ValueError, match="grey digits"):
        md.MultiDigitComposer(np.zeros([3, 8, 8, 3], np.float32), [0, 1, 2])
    with pytest.raises(ValueError, match="composer must be a MultiDigitComposer"):
        md.multi_digit_dataset(images, 2, 0)
