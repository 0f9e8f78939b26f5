"""Tests for tfssvae.data: sources, input checks, label splits and batch pipelines."""
import gzip
import os
import struct

import numpy as np
import pytest

from tfssvae import data
from tfssvae.data import sources


# ----------------------------------------------------------------------------- helpers

def write_idx(path, array):
    """Writes ``array`` (uint8) in MNIST idx format; gzipped when path ends in .gz."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I",
                                                           *array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def make_idx_dir(directory, gz, num_train=7, num_test=3, rows=5, cols=4, seed=0):
    """Writes a tiny MNIST-format dataset; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, [num_train, rows, cols]),
        "train-labels-idx1-ubyte": rng.integers(0, 4, [num_train]),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, [num_test, rows, cols]),
        "t10k-labels-idx1-ubyte": rng.integers(0, 4, [num_test]),
    }
    suffix = ".gz" if gz else ""
    for name, array in arrays.items():
        write_idx(os.path.join(directory, name + suffix), array)
    return arrays


def index_images(num_examples):
    """Images ``[num_examples, 2, 2, 1]`` whose pixels encode the example index."""
    values = np.arange(num_examples, dtype=np.float32) / num_examples
    return np.broadcast_to(values[:, None, None, None],
                           [num_examples, 2, 2, 1]).copy()


def decode_indices(x, num_examples):
    """Inverts ``index_images``: ``[batch, 2, 2, 1]`` -> int ``[batch]`` indices."""
    return np.rint(np.asarray(x)[:, 0, 0, 0] * num_examples).astype(np.int64)


def to_numpy(dataset):
    """A list of batches, each a dict of numpy arrays."""
    return [{key: value.numpy() for key, value in batch.items()} for batch in dataset]


def assert_same_batches(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for batch_a, batch_b in zip(batches_a, batches_b):
        for key in ("x", "y", "y_mask"):
            np.testing.assert_array_equal(batch_a[key], batch_b[key])


# ----------------------------------------------------------------------------- sources

def test_digits_source():
    source = data.load_source("digits")
    assert source.name == "digits"
    assert source.image_shape == (8, 8, 1)
    assert source.num_classes == 10
    assert len(source.train_images) + len(source.test_images) == 1797
    assert len(source.test_images) == pytest.approx(0.25 * 1797, abs=1)
    for images, labels in ((source.train_images, source.train_labels),
                           (source.test_images, source.test_labels)):
        assert images.dtype == np.float32 and labels.dtype == np.int32
        assert images.shape[1:] == (8, 8, 1) and len(labels) == len(images)
        assert images.min() == 0.0 and images.max() == 1.0
        # Stratified: every class present in both parts.
        assert set(np.unique(labels)) == set(range(10))
    # Deterministic split.
    again = data.load_source("digits")
    np.testing.assert_array_equal(source.train_labels, again.train_labels)
    np.testing.assert_array_equal(source.test_images, again.test_images)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    arrays = make_idx_dir(tmp_path, gz=gz)
    source = data.load_source(f"idx:{tmp_path}")
    expected_train = arrays["train-images-idx3-ubyte"][..., None] / 255.0
    np.testing.assert_allclose(source.train_images, expected_train, rtol=1e-6)
    np.testing.assert_allclose(
        source.test_images, arrays["t10k-images-idx3-ubyte"][..., None] / 255.0,
        rtol=1e-6)
    np.testing.assert_array_equal(source.train_labels,
                                  arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(source.test_labels, arrays["t10k-labels-idx1-ubyte"])
    assert source.train_images.dtype == np.float32
    assert source.train_labels.dtype == np.int32
    assert source.image_shape == (5, 4, 1)
    all_labels = np.concatenate([arrays["train-labels-idx1-ubyte"],
                                 arrays["t10k-labels-idx1-ubyte"]])
    assert source.num_classes == all_labels.max() + 1


def test_read_idx_round_trip_matches_writer(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", array)
    np.testing.assert_array_equal(sources.read_idx(str(tmp_path / "a.gz")), array)


def test_idx_bad_magic_number(tmp_path):
    make_idx_dir(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    content = bytearray(path.read_bytes())
    content[0] = 7
    path.write_bytes(bytes(content))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*bad magic"):
        data.load_source(f"idx:{tmp_path}")


def test_idx_truncated_data(tmp_path):
    make_idx_dir(tmp_path, gz=True)
    path = str(tmp_path / "t10k-images-idx3-ubyte.gz")
    with gzip.open(path, "rb") as f:
        content = f.read()
    with gzip.open(path, "wb") as f:
        f.write(content[:-5])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz.*truncated"):
        data.load_source(f"idx:{tmp_path}")


def test_idx_image_label_count_mismatch(tmp_path):
    make_idx_dir(tmp_path, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros([6]))
    with pytest.raises(ValueError, match=r"7 images but 6 labels"):
        data.load_source(f"idx:{tmp_path}")


def test_idx_missing_file(tmp_path):
    make_idx_dir(tmp_path, gz=False)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(ValueError, match=r"no file 't10k-labels-idx1-ubyte'"):
        data.load_source(f"idx:{tmp_path}")


@pytest.mark.parametrize("name, shape", [("mnist", (28, 28, 1)),
                                         ("svhn_cropped", (32, 32, 3))])
def test_tfds_mock(name, shape):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        source = data.load_source(f"tfds:{name}")
    assert source.name == f"tfds:{name}"
    assert source.image_shape == shape
    assert source.num_classes == 10
    assert source.train_images.shape == (6,) + shape
    assert source.test_images.shape == (6,) + shape
    assert source.train_images.dtype == np.float32
    assert source.train_labels.dtype == np.int32
    assert 0.0 <= source.train_images.min() and source.train_images.max() <= 1.0
    assert source.train_images.max() > 0.0


@pytest.mark.parametrize("spec", ["mnist", "tfds:", "idx:", "idx:/no/such/dir", "",
                                  "DIGITS", None])
def test_unknown_spec(spec):
    with pytest.raises(ValueError) as error:
        data.load_source(spec)
    message = str(error.value)
    assert repr(spec) in message
    for form in ('"digits"', '"idx:<directory>"', '"tfds:<name>"'):
        assert form in message


# ----------------------------------------------------------------------------- checks

def test_check_images_accepts_and_converts():
    images = np.full([2, 3, 3, 1], 0.5, np.float64)
    checked = data.check_images(images, image_shape=(3, 3, 1))
    assert checked.dtype == np.float32
    np.testing.assert_array_equal(checked, images)


@pytest.mark.parametrize("images, kwargs, pattern", [
    (np.zeros([4, 8, 8]), {}, r"images must have rank 4.*\(4, 8, 8\)"),
    (np.zeros([0, 8, 8, 1]), {}, r"at least one example"),
    (np.zeros([2, 8, 8, 1]), {"image_shape": (28, 28, 1)},
     r"\(28, 28, 1\); received \(8, 8, 1\)"),
    (np.array([np.nan, 0.1, np.inf, 0.3]).reshape(4, 1, 1, 1), {},
     r"received 2 non-finite"),
    (np.full([1, 2, 2, 1], 255.0), {}, r"in \[0, 1\]; received values in \[255"),
    (np.full([1, 2, 2, 1], -0.5), {}, r"in \[0, 1\]"),
])
def test_check_images_errors(images, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        data.check_images(images, **kwargs)


def test_check_images_names_argument():
    with pytest.raises(ValueError, match=r"^test_images must have rank 4"):
        data.check_images(np.zeros([3]), name="test_images")


def test_check_labels_accepts_whole_floats():
    labels = data.check_labels(np.array([0.0, 2.0, 1.0]), num_classes=3)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, [0, 2, 1])


@pytest.mark.parametrize("labels, kwargs, pattern", [
    (np.zeros([2, 3], int), {}, r"labels must have rank 1"),
    (np.array([0.0, 1.5]), {}, r"must be integers.*1\.5"),
    (np.array([True, False]), {}, r"must be integers"),
    (np.array([0, 1, 10, 2]), {}, r"in \[0, 10\); received label 10 at index 2"),
    (np.array([0, -1]), {}, r"received label -1"),
    (np.array([0, 1, 2]), {"num_examples": 4}, r"one label per example \(4\); "
                                               r"received 3"),
])
def test_check_labels_errors(labels, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        data.check_labels(labels, num_classes=10, **kwargs)


# ----------------------------------------------------------------------------- splits

def test_balanced_labelled_indices_balanced_and_seed_stable():
    labels = data.load_source("digits").train_labels
    indices = data.balanced_labelled_indices(labels, 100, 10, seed=3)
    assert indices.dtype == np.int64
    assert len(indices) == 100 and len(np.unique(indices)) == 100
    assert np.all(np.diff(indices) > 0)
    np.testing.assert_array_equal(np.bincount(labels[indices], minlength=10),
                                  np.full(10, 10))
    np.testing.assert_array_equal(
        indices, data.balanced_labelled_indices(labels, 100, 10, seed=3))
    assert not np.array_equal(
        indices, data.balanced_labelled_indices(labels, 100, 10, seed=4))


@pytest.mark.parametrize("num_labels, pattern", [
    (0, r"num_labels must be >= 1"),
    (-10, r"num_labels must be >= 1"),
    (60, r"at most the number of examples \(50\); received 60"),
    (15, r"divisible by num_classes \(10\).*received 15"),
    (40, r"class 2 has 3 examples, fewer than the 4"),
])
def test_balanced_labelled_indices_errors(num_labels, pattern):
    counts = np.array([6, 6, 3, 5, 5, 5, 5, 5, 5, 5])
    labels = np.repeat(np.arange(10), counts)
    assert len(labels) == 50
    with pytest.raises(ValueError, match=pattern):
        data.balanced_labelled_indices(labels, num_labels, 10, seed=0)


def test_validation_split_stratified_and_deterministic():
    labels = data.load_source("digits").train_labels
    train_idx, val_idx = data.validation_split(labels, 200, seed=1)
    assert train_idx.dtype == np.int64 and val_idx.dtype == np.int64
    assert len(val_idx) == 200 and len(train_idx) == len(labels) - 200
    assert np.all(np.diff(train_idx) > 0) and np.all(np.diff(val_idx) > 0)
    np.testing.assert_array_equal(np.union1d(train_idx, val_idx),
                                  np.arange(len(labels)))
    # Stratified: each class share is its proportional count, rounded up or down.
    expected = 200 * np.bincount(labels) / len(labels)
    counts = np.bincount(labels[val_idx], minlength=10)
    assert np.all(np.abs(counts - expected) < 1)
    again = data.validation_split(labels, 200, seed=1)
    np.testing.assert_array_equal(val_idx, again[1])
    assert not np.array_equal(val_idx, data.validation_split(labels, 200, seed=2)[1])


def test_validation_split_zero_and_errors():
    labels = np.arange(20) % 4
    train_idx, val_idx = data.validation_split(labels, 0, seed=0)
    np.testing.assert_array_equal(train_idx, np.arange(20))
    assert val_idx.shape == (0,) and val_idx.dtype == np.int64
    # Fewer validation examples than classes still works.
    assert len(data.validation_split(labels, 3, seed=0)[1]) == 3
    with pytest.raises(ValueError, match=r"validation_size must be >= 0"):
        data.validation_split(labels, -1, seed=0)
    with pytest.raises(ValueError, match=r"smaller than the number of examples \(20\)"):
        data.validation_split(labels, 20, seed=0)


# ----------------------------------------------------------------------------- pipeline

NUM_EXAMPLES = 103


@pytest.fixture(name="toy")
def fixture_toy():
    """Index-encoding images, labels 1..7 (never 0) and 10 labelled indices."""
    images = index_images(NUM_EXAMPLES)
    labels = (np.arange(NUM_EXAMPLES) * 5) % 7 + 1
    labelled = np.sort(np.random.default_rng(0).choice(NUM_EXAMPLES, 10,
                                                       replace=False))
    return images, labels, labelled


def test_steps_per_epoch():
    assert data.steps_per_epoch(103, 16, 6) == 10
    assert data.steps_per_epoch(100, 10, 0) == 10
    with pytest.raises(ValueError, match=r"at least one unlabelled batch"):
        data.steps_per_epoch(9, 16, 6)


def test_batches_composition(toy):
    images, labels, labelled = toy
    batch_size, labelled_batch_size = 16, 6
    unlabelled_size = batch_size - labelled_batch_size
    dataset = data.semi_supervised_batches(images, labels, labelled, batch_size,
                                           labelled_batch_size, seed=0, epoch=0)
    batches = to_numpy(dataset)
    steps = data.steps_per_epoch(NUM_EXAMPLES, batch_size, labelled_batch_size)
    assert len(batches) == steps == NUM_EXAMPLES // unlabelled_size
    seen_unlabelled, seen_labelled = [], []
    for batch in batches:
        assert batch["x"].shape == (batch_size, 2, 2, 1)
        assert batch["x"].dtype == np.float32
        assert batch["y"].dtype == np.int32 and batch["y_mask"].dtype == bool
        mask = batch["y_mask"]
        assert mask.sum() == labelled_batch_size
        assert not mask[:unlabelled_size].any() and mask[unlabelled_size:].all()
        index = decode_indices(batch["x"], NUM_EXAMPLES)
        np.testing.assert_array_equal(batch["y"][mask], labels[index[mask]])
        np.testing.assert_array_equal(batch["y"][~mask], 0)
        assert np.isin(index[mask], labelled).all()
        seen_unlabelled.extend(index[~mask])
        seen_labelled.extend(index[mask])
    # Each image at most once per epoch as an unlabelled example.
    assert len(seen_unlabelled) == steps * unlabelled_size
    assert len(set(seen_unlabelled)) == len(seen_unlabelled)
    # Labelled stream cycles: every full cycle of 10 is a permutation of them.
    cycles = [seen_labelled[start:start + 10]
              for start in range(0, len(seen_labelled) - 9, 10)]
    assert len(cycles) == steps * labelled_batch_size // 10
    for cycle in cycles:
        np.testing.assert_array_equal(np.sort(cycle), labelled)
    # ... and reshuffled every cycle, not replayed in one fixed order.
    assert len({tuple(cycle) for cycle in cycles}) > 1


def test_batches_deterministic_per_seed_and_epoch(toy):
    images, labels, labelled = toy

    def batches(seed, epoch):
        return to_numpy(data.semi_supervised_batches(images, labels, labelled, 16, 6,
                                                     seed=seed, epoch=epoch))

    first = batches(seed=1, epoch=2)
    assert_same_batches(first, batches(seed=1, epoch=2))
    for other in (batches(seed=1, epoch=3), batches(seed=2, epoch=2)):
        assert not np.array_equal(first[0]["x"], other[0]["x"])


@pytest.mark.parametrize("skip_steps", [1, 4, 10])
def test_batches_skip_steps_resume(toy, skip_steps):
    images, labels, labelled = toy
    full = to_numpy(data.semi_supervised_batches(images, labels, labelled, 16, 6,
                                                 seed=5, epoch=1))
    resumed = to_numpy(data.semi_supervised_batches(images, labels, labelled, 16, 6,
                                                    seed=5, epoch=1,
                                                    skip_steps=skip_steps))
    assert len(resumed) == len(full) - skip_steps
    assert_same_batches(full[skip_steps:], resumed)


def test_batches_unsupervised(toy):
    images, labels, _ = toy
    batches = to_numpy(data.semi_supervised_batches(images, labels, [], 20, 0,
                                                    seed=0, epoch=0))
    assert len(batches) == NUM_EXAMPLES // 20
    index = np.concatenate([decode_indices(b["x"], NUM_EXAMPLES) for b in batches])
    assert len(np.unique(index)) == len(index) == 100
    for batch in batches:
        assert not batch["y_mask"].any()
        np.testing.assert_array_equal(batch["y"], 0)


def test_batches_on_digits():
    source = data.load_source("digits")
    labelled = data.balanced_labelled_indices(source.train_labels, 10, 10, seed=0)
    dataset = data.semi_supervised_batches(source.train_images, source.train_labels,
                                           labelled, 64, 4, seed=0, epoch=0)
    batch = next(iter(dataset))
    assert batch["x"].shape == (64, 8, 8, 1)
    assert int(batch["y_mask"].numpy().sum()) == 4


@pytest.mark.parametrize("kwargs, pattern", [
    ({"batch_size": 0, "labelled_batch_size": 0}, r"batch_size must be >= 1"),
    ({"labelled_batch_size": -1}, r"labelled_batch_size must be >= 0"),
    ({"labelled_batch_size": 16}, r"smaller than batch_size \(16\).*received 16"),
    ({"labelled_indices": []}, r"labelled_indices must not be empty"),
    ({"labelled_indices": [0, 200]}, r"labelled_indices must be in \[0, 103\)"),
    ({"batch_size": 120, "labelled_batch_size": 10},
     r"at least one unlabelled batch.*110.*received 103"),
    ({"skip_steps": 11}, r"skip_steps must be at most the steps per epoch \(10\)"),
    ({"images": np.zeros([0, 2, 2, 1])}, r"at least one example"),
    ({"labels": np.zeros([5], int)}, r"one label per example \(103\)"),
])
def test_batches_errors(toy, kwargs, pattern):
    images, labels, labelled = toy
    arguments = dict(images=images, labels=labels, labelled_indices=labelled,
                     batch_size=16, labelled_batch_size=6, seed=0, epoch=0)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=pattern):
        data.semi_supervised_batches(**arguments)


def test_evaluation_batches(toy):
    images, labels, _ = toy
    batches = to_numpy(data.evaluation_batches(images, labels, batch_size=25))
    assert [len(b["y"]) for b in batches] == [25, 25, 25, 25, 3]
    index = np.concatenate([decode_indices(b["x"], NUM_EXAMPLES) for b in batches])
    np.testing.assert_array_equal(index, np.arange(NUM_EXAMPLES))
    np.testing.assert_array_equal(np.concatenate([b["y"] for b in batches]), labels)
    assert all(b["y_mask"].all() for b in batches)
    with pytest.raises(ValueError, match=r"batch_size must be >= 1"):
        data.evaluation_batches(images, labels, batch_size=0)
