"""Input checks shared by every data function.

Each check raises a ``ValueError`` that names the argument, says what was expected and
what was received, and returns the input converted to the dtypes the package uses:
float32 images in [0, 1] of shape ``[batch, height, width, channels]`` and int32
labels of shape ``[batch]``.
"""
import numpy as np


def check_images(images, name="images", image_shape=None):
    """Checks a batch of images and returns it as float32.

    Args:
        images: array-like ``[batch, height, width, channels]`` with values in [0, 1].
        name: the argument name to use in error messages.
        image_shape: optional ``(height, width, channels)`` the images must have.

    Returns:
        ``np.ndarray`` float32 ``[batch, height, width, channels]``.

    Raises:
        ValueError: if the images are not rank 4, hold no examples, have a shape other
            than ``image_shape``, are not numeric, hold NaN/inf, or leave [0, 1].
    """
    array = np.asarray(images)
    if array.ndim != 4:
        raise ValueError(
            f"{name} must have rank 4 [batch, height, width, channels]; received "
            f"shape {array.shape} (rank {array.ndim}).")
    if array.shape[0] == 0:
        raise ValueError(
            f"{name} must hold at least one example; received an empty batch of "
            f"shape {array.shape}.")
    if image_shape is not None and tuple(array.shape[1:]) != tuple(image_shape):
        raise ValueError(
            f"{name} must have image shape (height, width, channels) = "
            f"{tuple(image_shape)}; received {tuple(array.shape[1:])}.")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ValueError(
            f"{name} must be numeric (float32 in [0, 1]); received dtype "
            f"{array.dtype}.")
    array = array.astype(np.float32, copy=False)
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - np.count_nonzero(finite))
        raise ValueError(
            f"{name} must hold finite pixel values; received {bad} non-finite "
            f"(NaN or inf) values out of {array.size}.")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"{name} must hold pixel values in [0, 1]; received values in "
            f"[{low}, {high}].")
    return array


def label_vector(labels, name="labels", num_examples=None):
    """Checks rank, dtype and length of a label vector, without a class range.

    Integer dtypes are accepted; float dtypes only when every value is a whole number
    (``2.0`` is class 2, ``2.5`` is an error). Booleans are rejected.

    Args:
        labels: array-like ``[batch]`` of integer labels.
        name: the argument name to use in error messages.
        num_examples: optional number of labels required (one per image).

    Returns:
        ``np.ndarray`` int32 ``[batch]``.

    Raises:
        ValueError: if labels are not rank 1, not integers, do not fit in int32 or
            have the wrong length.
    """
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(
            f"{name} must have rank 1 [batch]; received shape {array.shape} "
            f"(rank {array.ndim}).")
    if num_examples is not None and array.shape[0] != num_examples:
        raise ValueError(
            f"{name} must have one label per example ({num_examples}); received "
            f"{array.shape[0]} labels.")
    if np.issubdtype(array.dtype, np.floating):
        whole = np.isfinite(array) & (array == np.round(array))
        if not whole.all():
            raise ValueError(
                f"{name} must be integers; received dtype {array.dtype} with the "
                f"non-integer value {array[~whole][0]}.")
    elif array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be integers; received dtype {array.dtype}.")
    limits = np.iinfo(np.int32)
    if array.size and (array.min() < limits.min or array.max() > limits.max):
        raise ValueError(
            f"{name} must fit in int32; received values in [{array.min()}, "
            f"{array.max()}].")
    return array.astype(np.int32)


def check_labels(labels, num_classes, name="labels", num_examples=None):
    """Checks a vector of class labels and returns it as int32.

    Integer dtypes are accepted; float dtypes only when every value is a whole number
    (``2.0`` is class 2, ``2.5`` is an error).

    Args:
        labels: array-like ``[batch]`` of class ids in ``[0, num_classes)``.
        num_classes: number of classes, a positive int.
        name: the argument name to use in error messages.
        num_examples: optional number of labels required (one per image).

    Returns:
        ``np.ndarray`` int32 ``[batch]``.

    Raises:
        ValueError: if ``num_classes`` is not a positive int, or the labels are not
            rank 1, not integers, have the wrong length, or hold a value outside
            ``[0, num_classes)``.
    """
    num_classes = check_int(num_classes, "num_classes", 1)
    array = label_vector(labels, name=name, num_examples=num_examples)
    outside = (array < 0) | (array >= num_classes)
    if outside.any():
        position = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"{name} must be in [0, {num_classes}); received label {array[position]} "
            f"at index {position} ({int(outside.sum())} labels out of range).")
    return array


def check_int(value, name, minimum=None):
    """Checks that ``value`` is an int (not a bool), at least ``minimum`` if given.

    Returns:
        ``value`` as a Python int.

    Raises:
        ValueError: naming ``name``, if the check fails.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int; received {value!r}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; received {value}.")
    return int(value)


def index_vector(values, name):
    """Checks that ``values`` is a non-empty vector ``[batch]`` of non-negative integers (an
    index per example: sprite factor combinations, face identities).

    Returns:
        ``np.ndarray`` int64 ``[batch]``.

    Raises:
        ValueError: naming ``name``, if the shape, the dtype or a sign is wrong.
    """
    array = np.asarray(values)
    if array.ndim != 1 or array.shape[0] < 1:
        raise ValueError(f"{name} must have shape [batch] with batch >= 1; received shape {array.shape}.")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be integers; received dtype {array.dtype}.")
    if array.min() < 0:
        raise ValueError(f"{name} must be >= 0; received {array.min()}.")
    return array.astype(np.int64, copy=False)
