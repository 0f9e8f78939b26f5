"""Image classification data sources: embedded digits, MNIST-format directories, TFDS.

``load_source(spec)`` returns a ``DataSource`` with float32 images in [0, 1] of shape
``[num_examples, height, width, channels]`` and int32 labels ``[num_examples]``:

- ``"digits"``: scikit-learn's 1,797 real 8x8 handwritten digits (no download).
- ``"idx:<directory>"``: a directory in MNIST idx format (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``,
  each optionally gzipped), e.g. ``idx:/usr/share/datasets/fashion-mnist``.
- ``"tfds:<name>"``: a TensorFlow Datasets image classification dataset with
  ``train`` and ``test`` splits, e.g. ``tfds:mnist`` or ``tfds:svhn_cropped``.
"""
import dataclasses
import gzip
import os

import numpy as np

from tfssvae.data.validation import check_images, check_labels

ACCEPTED_SPECS = ('"digits"', '"idx:<directory>"', '"tfds:<name>"')

# idx type code -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_TFDS_CHUNK = 4096  # examples per batch when reading a TFDS split into memory

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclasses.dataclass(frozen=True)
class DataSource:
    """A labelled image dataset split into train and test parts.

    Attributes:
        name: the spec it was loaded from, e.g. ``"digits"`` or ``"tfds:mnist"``.
        train_images: float32 ``[num_train, height, width, channels]`` in [0, 1].
        train_labels: int32 ``[num_train]`` in ``[0, num_classes)``.
        test_images: float32 ``[num_test, height, width, channels]`` in [0, 1].
        test_labels: int32 ``[num_test]`` in ``[0, num_classes)``.
        num_classes: number of classes.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int

    @property
    def image_shape(self):
        """``(height, width, channels)`` of every image."""
        return tuple(self.train_images.shape[1:])


def _bad_spec(spec, reason):
    """Returns the ValueError for a spec that cannot be loaded."""
    return ValueError(
        f"spec must be one of {', '.join(ACCEPTED_SPECS)}; received {spec!r} "
        f"({reason}).")


def _validated_source(name, train_images, train_labels, test_images, test_labels,
                      num_classes):
    """Checks every array of a source and returns it as a ``DataSource``."""
    train_images = check_images(train_images, name="train_images")
    test_images = check_images(test_images, name="test_images",
                               image_shape=train_images.shape[1:])
    train_labels = check_labels(train_labels, num_classes, name="train_labels",
                                num_examples=train_images.shape[0])
    test_labels = check_labels(test_labels, num_classes, name="test_labels",
                               num_examples=test_images.shape[0])
    return DataSource(name=name, train_images=train_images, train_labels=train_labels,
                      test_images=test_images, test_labels=test_labels,
                      num_classes=int(num_classes))


def _to_unit_float(images):
    """uint8 images (any shape) -> float32 divided by 255; other dtypes cast only."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        images = images.astype(np.float32)
        images /= 255.0
        return images
    return images.astype(np.float32)


def _load_digits():
    """scikit-learn digits, 8x8x1, stratified 75/25 split with ``random_state=0``."""
    from sklearn import datasets, model_selection

    digits = datasets.load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., np.newaxis]
    labels = digits.target.astype(np.int32)
    train_x, test_x, train_y, test_y = model_selection.train_test_split(
        images, labels, test_size=0.25, stratify=labels, random_state=0)
    return _validated_source("digits", train_x, train_y, test_x, test_y,
                             num_classes=10)


def read_idx(path):
    """Reads one file in idx format (optionally gzipped, by the ``.gz`` suffix).

    The header is two zero bytes, a type code, the number of dimensions, then each
    dimension as a big-endian uint32; the data follows in row-major order.

    Args:
        path: file path.

    Returns:
        ``np.ndarray`` with the stored dims and dtype (native byte order).

    Raises:
        ValueError: naming the file, on a bad magic number or a data size that does
            not match the header (truncated or trailing bytes), or unreadable gzip.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            content = f.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"idx file {path!r} could not be read: {error}") from error
    if len(content) < 4:
        raise ValueError(
            f"idx file {path!r} is truncated: expected a 4-byte magic number, "
            f"received {len(content)} bytes.")
    zero_a, zero_b, type_code, num_dims = content[:4]
    if zero_a or zero_b or type_code not in _IDX_DTYPES or num_dims == 0:
        raise ValueError(
            f"idx file {path!r} has a bad magic number 0x{content[:4].hex()}: "
            f"expected 0x0000TTDD with type TT in "
            f"{[hex(code) for code in _IDX_DTYPES]} and DD >= 1 dimensions.")
    header_size = 4 + 4 * num_dims
    if len(content) < header_size:
        raise ValueError(
            f"idx file {path!r} is truncated: the header needs {header_size} bytes "
            f"for {num_dims} dimensions, received {len(content)}.")
    dims = tuple(int(d) for d in np.frombuffer(content, ">u4", num_dims, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(dims)) * dtype.itemsize
    received = len(content) - header_size
    if received != expected:
        problem = "truncated" if received < expected else "longer than its header says"
        raise ValueError(
            f"idx file {path!r} is {problem}: dims {dims} of {dtype.name} need "
            f"{expected} data bytes, received {received}.")
    data = np.frombuffer(content, dtype, offset=header_size).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _find_idx_file(directory, base_name):
    """Returns the path of ``base_name`` or ``base_name.gz`` in ``directory``."""
    for candidate in (base_name, base_name + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    raise ValueError(
        f"idx directory {directory!r} has no file {base_name!r} or "
        f"{base_name + '.gz'!r}.")


def _load_idx(spec, directory):
    """Loads the four idx files of an MNIST-format directory."""
    arrays = {}
    for key, base_name in _IDX_FILES.items():
        path = _find_idx_file(directory, base_name)
        arrays[key] = (path, read_idx(path))
    for part in ("train", "test"):
        image_path, images = arrays[part + "_images"]
        label_path, labels = arrays[part + "_labels"]
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"idx file {image_path!r} must hold uint8 images [count, rows, "
                f"columns]; received {images.dtype} of shape {images.shape}.")
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"idx file {label_path!r} must hold integer labels [count]; received "
                f"{labels.dtype} of shape {labels.shape}.")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"idx files {image_path!r} and {label_path!r} disagree: "
                f"{images.shape[0]} images but {labels.shape[0]} labels.")
    train_images, train_labels = arrays["train_images"][1], arrays["train_labels"][1]
    test_images, test_labels = arrays["test_images"][1], arrays["test_labels"][1]
    num_classes = _idx_num_classes(arrays["train_labels"][0], train_labels)
    return _validated_source(
        spec, _to_unit_float(train_images[..., np.newaxis]), train_labels,
        _to_unit_float(test_images[..., np.newaxis]), test_labels, num_classes)


def _idx_num_classes(path, labels):
    """The number of classes of an idx directory: 1 + the largest training label.

    An idx file does not say how many classes there are; a label beyond classes that have no
    training example (a 12 among the digits 0..9) is a corrupt label, not a 13-class problem,
    and is refused, named by its value and index.
    """
    labels = np.asarray(labels)
    if labels.size == 0:
        raise ValueError(f"idx file {path!r} holds no training labels.")
    if labels.min() < 0:
        position = int(np.argmin(labels))
        raise ValueError(f"idx file {path!r}: label {labels[position]} at index {position} is negative; "
                         f"expected class ids 0..K-1.")
    present = np.bincount(labels.astype(np.int64))
    missing = np.flatnonzero(present[1:] == 0) + 1  # (a missing class 0 reads as 1-based labels)
    if missing.size:
        num_classes = int(missing[0])
        position = int(np.flatnonzero(labels > num_classes)[0])
        empty = ", ".join(str(c) for c in missing[:5]) + (", ..." if missing.size > 5 else "")
        raise ValueError(
            f"idx file {path!r}: label {labels[position]} at index {position} is outside the classes "
            f"0..{num_classes - 1} that the other labels cover (no training example of class {empty}); "
            f"expected class ids 0..K-1 with every class present.")
    return len(present)


# Where TFDS downloads most datasets from; probed so that an offline machine fails at once
# (TFDS itself retries for minutes before it gives up).
_DOWNLOAD_HOST = ("storage.googleapis.com", 443)


def _download_possible(timeout=5.0):
    import socket

    try:
        socket.create_connection(_DOWNLOAD_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_tfds(spec, name, data_dir):
    """Loads the ``train`` and ``test`` splits of a TFDS dataset into memory.

    The splits are read in chunks of ``_TFDS_CHUNK`` examples and concatenated rather
    than with ``tfds.load(..., batch_size=-1)``: the latter batches by the example
    count in the dataset metadata, which is missing under ``tfds.testing.mock_data``
    (TFDS then batches by ``sys.maxsize`` and the process aborts).
    """
    try:
        import tensorflow_datasets as tfds  # slow import, so only when needed
    except ImportError as error:
        raise ValueError(f"dataset {spec!r}: tensorflow_datasets cannot be imported ({error}); "
                         f"reinstall tfssvae with its dependencies (pip install -e .)") from None

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(f"dataset {spec!r}: TensorFlow Datasets has no dataset named {name!r} "
                         f"(see https://www.tensorflow.org/datasets/catalog)") from None
    where = data_dir or "the default TFDS directory (~/tensorflow_datasets)"
    if not builder.is_prepared():
        prepare = (f"prepare it on a machine with internet (tfds build {name} --data_dir=DIR), copy DIR "
                   f"here and pass it as data_dir (--config.data_dir=DIR)")
        # (Under tfds.testing.mock_data nothing is downloaded: no probe.)
        mocked = type(builder).download_and_prepare.__module__.startswith("tensorflow_datasets.testing")
        if not mocked and not _download_possible():
            raise ValueError(f"dataset {spec!r}: not prepared in {where}, and it cannot be downloaded "
                             f"({_DOWNLOAD_HOST[0]} is unreachable); {prepare}")
        try:
            builder.download_and_prepare()
        except OSError as error:  # connection errors included
            raise ValueError(f"dataset {spec!r}: not prepared in {where}, and the download failed "
                             f"({str(error).splitlines()[0][:200]}); {prepare}") from None
    (train, test), info = tfds.load(name, split=["train", "test"], data_dir=data_dir,
                                    as_supervised=True, with_info=True, download=False)
    label_key = info.supervised_keys[1] if info.supervised_keys else "label"
    num_classes = info.features[label_key].num_classes

    def to_numpy(dataset):
        chunks = list(tfds.as_numpy(dataset.batch(_TFDS_CHUNK)))
        images = np.concatenate([chunk_images for chunk_images, _ in chunks])
        labels = np.concatenate([chunk_labels for _, chunk_labels in chunks])
        return _to_unit_float(images), labels

    train_x, train_y = to_numpy(train)
    test_x, test_y = to_numpy(test)
    return _validated_source(spec, train_x, train_y, test_x, test_y, num_classes)


def load_source(spec, data_dir=None):
    """Loads a labelled image dataset by spec.

    Args:
        spec: ``"digits"``, ``"idx:<directory>"`` or ``"tfds:<name>"`` (see the
            module docstring).
        data_dir: TFDS data directory, used by ``"tfds:"`` specs only.

    Returns:
        A validated ``DataSource``: float32 images ``[num_examples, height, width,
        channels]`` in [0, 1] and int32 labels ``[num_examples]``.

    Raises:
        ValueError: for an unknown or incomplete spec, a missing idx directory, a
            malformed idx file, or data that fails ``check_images``/``check_labels``.
    """
    if not isinstance(spec, str):
        raise _bad_spec(spec, "not a string")
    if spec == "digits":
        return _load_digits()
    if spec.startswith("idx:"):
        directory = spec[len("idx:"):]
        if not directory:
            raise _bad_spec(spec, "no directory after 'idx:'")
        if not os.path.isdir(directory):
            raise _bad_spec(spec, f"directory {directory!r} does not exist")
        return _load_idx(spec, directory)
    if spec.startswith("tfds:"):
        name = spec[len("tfds:"):]
        if not name:
            raise _bad_spec(spec, "no dataset name after 'tfds:'")
        return _load_tfds(spec, name, data_dir)
    raise _bad_spec(spec, "unknown form")
