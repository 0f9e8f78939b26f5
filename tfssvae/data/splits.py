"""Label splits: which training examples keep their labels, and a validation hold-out.

Both functions are deterministic given ``seed`` (``np.random.default_rng(seed)``) and
return sorted int64 index arrays into the ``[num_examples]`` label vector.
"""
import numpy as np

from tfssvae.data.validation import check_int, check_labels, label_vector


def balanced_labelled_indices(labels, num_labels, num_classes, seed):
    """Picks ``num_labels // num_classes`` random examples of every class.

    Args:
        labels: int ``[num_examples]`` class ids in ``[0, num_classes)``.
        num_labels: total number of labelled examples, a positive multiple of
            ``num_classes`` and at most ``num_examples``.
        num_classes: number of classes.
        seed: seed for ``np.random.default_rng``; the same seed gives the same indices.

    Returns:
        int64 ``[num_labels]``: sorted indices into ``labels``, exactly
        ``num_labels // num_classes`` of them for each class.

    Raises:
        ValueError: if ``num_labels`` is not positive, exceeds the number of examples,
            is not divisible by ``num_classes``, or a class has too few examples.
    """
    labels = check_labels(labels, num_classes)
    num_labels = check_int(num_labels, "num_labels", 1)
    if num_labels > labels.shape[0]:
        raise ValueError(
            f"num_labels must be at most the number of examples ({labels.shape[0]}); "
            f"received {num_labels}.")
    if num_labels % num_classes:
        raise ValueError(
            f"num_labels must be divisible by num_classes ({num_classes}) so every "
            f"class gets the same count; received {num_labels}.")
    per_class = num_labels // num_classes
    counts = np.bincount(labels, minlength=num_classes)
    for label in range(num_classes):
        if counts[label] < per_class:
            raise ValueError(
                f"labels: class {label} has {counts[label]} examples, fewer than the "
                f"{per_class} per class needed for num_labels={num_labels}.")
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == label), size=per_class,
                         replace=False)
              for label in range(num_classes)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def validation_split(labels, validation_size, seed):
    """Splits example indices into a training part and a validation hold-out.

    The hold-out is stratified: each class gets a share of ``validation_size``
    proportional to its frequency (largest-remainder rounding, ties broken at random),
    so class shares match as closely as whole counts allow.

    Args:
        labels: int ``[num_examples]`` class ids (any non-negative integers).
        validation_size: number of validation examples, in ``[0, num_examples)``.
        seed: seed for ``np.random.default_rng``.

    Returns:
        ``(train_idx, val_idx)``: sorted int64 index arrays of lengths
        ``num_examples - validation_size`` and ``validation_size`` that together
        cover every example once.

    Raises:
        ValueError: if ``validation_size`` is negative or not below the number of
            examples, or the labels are malformed.
    """
    labels = label_vector(labels)
    validation_size = check_int(validation_size, "validation_size", 0)
    num_examples = labels.shape[0]
    if validation_size >= num_examples:
        raise ValueError(
            f"validation_size must be smaller than the number of examples "
            f"({num_examples}); received {validation_size}.")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = validation_size * counts / num_examples
    shares = np.floor(exact).astype(np.int64)
    # Hand the leftover examples to the classes with the largest remainders, looking
    # at the classes in random order so that ties do not always favour low class ids.
    order = rng.permutation(len(classes))
    order = order[np.argsort(-(exact - shares)[order], kind="stable")]
    shares[order[:validation_size - shares.sum()]] += 1
    val_parts = [rng.choice(np.flatnonzero(labels == label), size=share,
                            replace=False)
                 for label, share in zip(classes, shares)]
    val_idx = np.sort(np.concatenate(val_parts)).astype(np.int64)
    train_idx = np.setdiff1d(np.arange(num_examples), val_idx).astype(np.int64)
    return train_idx, val_idx
