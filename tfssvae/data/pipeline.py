"""tf.data pipelines: mixed labelled/unlabelled training batches and evaluation batches.

Every batch is a dict (see DESIGN.md)::

    {"x": float32 [batch, height, width, channels],
     "y": int32 [batch],        # 0 where the label is hidden
     "y_mask": bool [batch]}    # True where "y" is an observed label

Index streams are built in numpy (cheap and exactly reproducible); the images are
gathered inside the tf.data pipeline.
"""
import numpy as np
import tensorflow as tf

from tfssvae.data.validation import check_images, check_int, label_vector


def _check_batch_sizes(batch_size, labelled_batch_size):
    """Validates the two batch sizes; returns them as ints."""
    batch_size = check_int(batch_size, "batch_size", 1)
    labelled_batch_size = check_int(labelled_batch_size, "labelled_batch_size", 0)
    if labelled_batch_size >= batch_size:
        raise ValueError(
            f"labelled_batch_size must be smaller than batch_size ({batch_size}) so "
            f"every batch has unlabelled examples; received {labelled_batch_size}.")
    return batch_size, labelled_batch_size


def steps_per_epoch(num_examples, batch_size, labelled_batch_size):
    """Number of training batches in one epoch of ``semi_supervised_batches``.

    One epoch is one pass over all ``num_examples`` images as unlabelled examples,
    ``batch_size - labelled_batch_size`` per batch, dropping the remainder.

    Args:
        num_examples: number of training images.
        batch_size: examples per batch, labelled and unlabelled together.
        labelled_batch_size: labelled examples per batch, in ``[0, batch_size)``.

    Returns:
        ``num_examples // (batch_size - labelled_batch_size)``, at least 1.

    Raises:
        ValueError: on invalid sizes, or fewer examples than one unlabelled batch.
    """
    batch_size, labelled_batch_size = _check_batch_sizes(batch_size,
                                                         labelled_batch_size)
    num_examples = check_int(num_examples, "num_examples", 0)
    unlabelled = batch_size - labelled_batch_size
    if num_examples < unlabelled:
        raise ValueError(
            f"the dataset must hold at least one unlabelled batch "
            f"(batch_size - labelled_batch_size = {unlabelled} examples); received "
            f"{num_examples} examples.")
    return num_examples // unlabelled


def _epoch_index_streams(num_examples, labelled_indices, steps, unlabelled_size,
                         labelled_size, seed, epoch):
    """Builds the per-batch example indices of one epoch.

    Returns:
        int64 ``[steps, unlabelled_size]`` unlabelled indices (a prefix of one random
        permutation of all examples) and int64 ``[steps, labelled_size]`` labelled
        indices (``labelled_indices`` cycled, reshuffled every cycle).
    """
    rng = np.random.default_rng([seed, epoch])
    unlabelled = rng.permutation(num_examples)[:steps * unlabelled_size]
    needed = steps * labelled_size
    cycles = []
    drawn = 0
    while drawn < needed:
        cycles.append(rng.permutation(labelled_indices))
        drawn += len(labelled_indices)
    labelled = (np.concatenate(cycles)[:needed] if cycles
                else np.zeros([0], np.int64))
    return (unlabelled.reshape(steps, unlabelled_size).astype(np.int64),
            labelled.reshape(steps, labelled_size).astype(np.int64))


def semi_supervised_batches(images, labels, labelled_indices, batch_size,
                            labelled_batch_size, seed, epoch, skip_steps=0):
    """One epoch of training batches mixing unlabelled and labelled examples.

    Each batch holds ``batch_size - labelled_batch_size`` unlabelled examples (rows
    first; drawn without replacement from all images, so each image appears at most
    once per epoch; ``y = 0``, ``y_mask = False``) followed by ``labelled_batch_size``
    labelled examples (drawn from ``labelled_indices``, which cycle endlessly and are
    reshuffled every cycle; ``y`` = true label, ``y_mask = True``). All order is fixed
    by ``np.random.default_rng([seed, epoch])``.

    Args:
        images: float32 ``[num_examples, height, width, channels]`` in [0, 1].
        labels: int ``[num_examples]``; only the entries at ``labelled_indices`` are
            read (they must be >= 0), so hidden labels may hold any integer.
        labelled_indices: int ``[num_labelled]`` indices into ``images``; may be empty
            when ``labelled_batch_size == 0``.
        batch_size: examples per batch.
        labelled_batch_size: labelled examples per batch, in ``[0, batch_size)``;
            0 gives purely unsupervised batches (every mask False).
        seed: non-negative int seed.
        epoch: non-negative int epoch number.
        skip_steps: number of leading batches of the epoch to leave out (to resume
            mid-epoch); the remaining batches equal those of an un-skipped epoch.

    Returns:
        ``tf.data.Dataset`` of ``steps_per_epoch(...) - skip_steps`` dicts
        ``{"x": float32 [batch_size, height, width, channels], "y": int32
        [batch_size], "y_mask": bool [batch_size]}``.

    Raises:
        ValueError: on malformed images, labels or indices, invalid sizes, a
            dataset smaller than one unlabelled batch, or labelled batches requested
            with no labelled indices.
    """
    images = check_images(images)
    num_examples = images.shape[0]
    labels = label_vector(labels, num_examples=num_examples)
    steps = steps_per_epoch(num_examples, batch_size, labelled_batch_size)
    seed = check_int(seed, "seed", 0)
    epoch = check_int(epoch, "epoch", 0)
    skip_steps = check_int(skip_steps, "skip_steps", 0)
    if skip_steps > steps:
        raise ValueError(
            f"skip_steps must be at most the steps per epoch ({steps}); received "
            f"{skip_steps}.")
    labelled_indices = label_vector(labelled_indices, name="labelled_indices")
    if labelled_batch_size > 0 and labelled_indices.shape[0] == 0:
        raise ValueError(
            f"labelled_indices must not be empty when labelled_batch_size > 0; "
            f"received 0 indices with labelled_batch_size={labelled_batch_size}.")
    if labelled_indices.size and (labelled_indices.min() < 0 or
                                  labelled_indices.max() >= num_examples):
        raise ValueError(
            f"labelled_indices must be in [0, {num_examples}); received values in "
            f"[{labelled_indices.min()}, {labelled_indices.max()}].")
    if labelled_indices.size and labels[labelled_indices].min() < 0:
        raise ValueError(
            f"labels at labelled_indices must be non-negative class ids; received "
            f"{labels[labelled_indices].min()}.")

    unlabelled_size = batch_size - labelled_batch_size
    unlabelled, labelled = _epoch_index_streams(
        num_examples, labelled_indices.astype(np.int64), steps, unlabelled_size,
        labelled_batch_size, seed, epoch)
    index = np.concatenate([unlabelled, labelled], axis=1)[skip_steps:]
    mask = np.zeros([batch_size], bool)
    mask[unlabelled_size:] = True
    mask = np.broadcast_to(mask, index.shape)
    y = np.where(mask, labels[index], 0).astype(np.int32)

    images_tensor = tf.convert_to_tensor(images)

    def gather(batch):
        return {"x": tf.gather(images_tensor, batch["index"]), "y": batch["y"],
                "y_mask": batch["y_mask"]}

    dataset = tf.data.Dataset.from_tensor_slices(
        {"index": index, "y": y, "y_mask": np.ascontiguousarray(mask)})
    return dataset.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE)


def evaluation_batches(images, labels, batch_size):
    """All examples in order, unshuffled, keeping the final partial batch.

    Args:
        images: float32 ``[num_examples, height, width, channels]`` in [0, 1].
        labels: int ``[num_examples]`` class ids (non-negative).
        batch_size: examples per batch.

    Returns:
        ``tf.data.Dataset`` of dicts ``{"x": float32 [batch, height, width,
        channels], "y": int32 [batch], "y_mask": bool [batch]}`` with every mask
        True; the last batch may be smaller than ``batch_size``.

    Raises:
        ValueError: on malformed images or labels, or ``batch_size < 1``.
    """
    images = check_images(images)
    labels = label_vector(labels, num_examples=images.shape[0])
    if labels.min() < 0:
        raise ValueError(
            f"labels must be non-negative class ids; received {labels.min()}.")
    batch_size = check_int(batch_size, "batch_size", 1)
    dataset = tf.data.Dataset.from_tensor_slices(
        {"x": images, "y": labels, "y_mask": np.ones(labels.shape, bool)})
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


class SemiSupervisedSource:
    """The training-loop view of ``semi_supervised_batches``: sizes known up front, one call per epoch.

    ``training.train`` asks a source for ``steps_per_epoch``, ``examples_per_step`` and
    ``epoch(epoch, skip_steps)``; grouped data (``data.groups.GroupedSource``) answers the same.
    """

    def __init__(self, images, labels, labelled_indices, batch_size, labelled_batch_size, seed):
        self.images, self.labels, self.labelled_indices = images, labels, labelled_indices
        self.batch_size, self.labelled_batch_size, self.seed = batch_size, labelled_batch_size, seed
        self.steps_per_epoch = steps_per_epoch(len(images), batch_size, labelled_batch_size)
        self.examples_per_step = batch_size

    def epoch(self, epoch, skip_steps=0):
        return semi_supervised_batches(self.images, self.labels, self.labelled_indices, self.batch_size,
                                       self.labelled_batch_size, seed=self.seed, epoch=epoch,
                                       skip_steps=skip_steps)


def batch_indices(num_batches=None):
    """The batch numbers of a procedural source (sprites, faces, multi-digit canvases), each
    batch rendered from (seed, batch number): ``0, 1, ...`` endlessly, or ``num_batches`` of them.

    Raises:
        ValueError: if ``num_batches`` is given and is not an int >= 1.
    """
    if num_batches is None:
        return tf.data.Dataset.counter()
    return tf.data.Dataset.range(check_int(num_batches, "num_batches", 1))


class ProceduralSource:
    """A batch source for ``training.train`` whose data are rendered on the fly (sprites,
    faces, multi-digit canvases): endless, so an "epoch" is ``steps_per_epoch`` batches.
    Epoch e uses its own seed, so resuming mid-epoch replays exactly the batches that were
    still to come.  A subclass gives ``dataset(seed, num_batches)``, the rendered batches."""

    def __init__(self, batch_size, seed, steps_per_epoch=1000):
        self.batch_size = check_int(batch_size, "batch_size", 1)
        self.seed = check_int(seed, "seed", 0)
        self.steps_per_epoch = check_int(steps_per_epoch, "steps_per_epoch", 1)
        self.examples_per_step = self.batch_size

    def dataset(self, seed, num_batches):
        raise NotImplementedError

    def epoch(self, epoch, skip_steps=0):
        return self.dataset(self.seed * 100_003 + epoch, self.steps_per_epoch).skip(skip_steps)
