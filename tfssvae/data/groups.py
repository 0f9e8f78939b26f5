"""Grouped batches for the ML-VAE: observations that share a group id share content.

Groups come from any integer column: class labels for digits / MNIST-format data (every
group then holds examples of one class), or a dataset's own group-id column.  Each
batch is a dict::

    {"x": float32 [n, H, W, C],
     "group": int32 [n],   # segment id of each row, 0..G-1, rows in shuffled order
     "y": int32 [n],       # the grouping column's value of each row (never shown as a label)
     "y_mask": bool [n]}   # all False: the ML-VAE is not told any label
"""
import numpy as np
import tensorflow as tf

from tfssvae.data.validation import check_images, check_int, label_vector


def training_rows(labels, held_out_classes, num_classes):
    """Rows of the examples whose class is not held out of training (unseen groups).

    Args:
      labels: int ``[N]`` class of each example.
      held_out_classes: classes whose examples never reach training; may be empty.
      num_classes: classes of the data, for the error message.

    Returns:
      int64 ``[M]`` row indices, in order, of the examples of the other classes.

    Raises:
      ValueError: a held-out class the data do not have, a class listed twice, or every
        class but one (or all) held out, which leaves no two groups to contrast.
    """
    labels = label_vector(labels, "labels")
    held_out = [check_int(c, "held_out_classes", 0) for c in held_out_classes]
    present = set(np.unique(labels).tolist())
    missing = sorted(set(held_out) - present)
    if missing:
        raise ValueError(f"held_out_classes: the data have no class {missing} (their {num_classes} classes are "
                         f"{sorted(present)}); received {tuple(held_out)}")
    if len(set(held_out)) != len(held_out):
        raise ValueError(f"held_out_classes: a class is listed twice in {tuple(held_out)}")
    if len(present) - len(held_out) < 2:
        raise ValueError(f"held_out_classes: {tuple(held_out)} leave fewer than two of the {len(present)} classes "
                         f"to train on")
    return np.flatnonzero(~np.isin(labels, held_out))


def make_groups(group_column, group_size, rng, variable_sizes=False):
    """Splits examples into groups that share a ``group_column`` value.

    Every value's examples are shuffled and cut into groups of ``group_size`` (the
    remainder is dropped), or, with ``variable_sizes``, of sizes drawn uniformly from
    1..group_size.  Returns a list of int64 index arrays, shuffled.
    """
    group_size = check_int(group_size, "group_size", 1)
    groups = []
    for value in np.unique(group_column):
        members = rng.permutation(np.flatnonzero(group_column == value))
        start = 0
        while start < len(members):
            size = int(rng.integers(1, group_size + 1)) if variable_sizes else group_size
            if start + size > len(members):
                if not variable_sizes:
                    break
                size = len(members) - start
            groups.append(members[start:start + size])
            start += size
    order = rng.permutation(len(groups))
    return [groups[i] for i in order]


class GroupedSource:
    """Training batches of ``groups_per_batch`` groups, for ``training.train``.

    Args:
      images: float32 ``[N, H, W, C]`` in [0, 1].
      group_column: int ``[N]``, examples with equal values may share a group.
      groups_per_batch: G.
      group_size: K, members of every group (the largest size with ``variable_sizes``).
      seed: fixes every epoch's grouping and order (with the epoch number).
      variable_sizes: draw each group's size uniformly from 1..K.
    """

    def __init__(self, images, group_column, groups_per_batch, group_size, seed, variable_sizes=False):
        self.images = check_images(images, "images")
        self.group_column = label_vector(group_column, "group_column", num_examples=len(self.images))
        self.groups_per_batch = check_int(groups_per_batch, "groups_per_batch", 1)
        self.group_size = check_int(group_size, "group_size", 1)
        self.seed, self.variable_sizes = int(seed), bool(variable_sizes)
        values = np.unique(self.group_column)
        if len(values) < 2:
            # One value makes every group alike: the content has nothing to tell apart.
            raise ValueError(f"group_column: expected at least two distinct values (groups of different content), "
                             f"received only {values.tolist()}")
        # Every epoch has the same number of steps (resuming counts on it): the fewest groups
        # any epoch can make, floor(n / K) per value for fixed sizes, ceil(n / K) for variable ones.
        counts = np.unique(self.group_column, return_counts=True)[1]
        fewest = int(np.sum(-(-counts // self.group_size) if self.variable_sizes else counts // self.group_size))
        if fewest < self.groups_per_batch:
            raise ValueError(
                f"groups_per_batch: the data make only {fewest} groups of size {self.group_size}, "
                f"fewer than one batch of {self.groups_per_batch}")
        self.steps_per_epoch = fewest // self.groups_per_batch
        mean_size = np.mean([len(g) for g in self._groups(0)])  # varies a little between epochs
        self.examples_per_step = float(mean_size * self.groups_per_batch)
        shape = self.images.shape[1:]
        self._signature = {
            "x": tf.TensorSpec((None, *shape), tf.float32), "group": tf.TensorSpec((None,), tf.int32),
            "y": tf.TensorSpec((None,), tf.int32), "y_mask": tf.TensorSpec((None,), tf.bool),
        }

    def _groups(self, epoch):
        rng = np.random.default_rng([self.seed, epoch])
        return make_groups(self.group_column, self.group_size, rng, self.variable_sizes)

    def batch(self, groups, rng):
        """The batch dict of a list of index arrays, rows shuffled (segment ids need no order)."""
        ids = np.concatenate([np.full(len(g), i, np.int32) for i, g in enumerate(groups)])
        rows = np.concatenate(groups)
        order = rng.permutation(len(rows))
        rows, ids = rows[order], ids[order]
        return {"x": self.images[rows], "group": ids, "y": self.group_column[rows].astype(np.int32),
                "y_mask": np.zeros(len(rows), bool)}

    def epoch(self, epoch, skip_steps=0):
        """This epoch's batches from step ``skip_steps`` on; each step's rows are fixed by (seed, epoch, step)."""
        groups, size = self._groups(epoch), self.groups_per_batch

        def generate():
            for step in range(skip_steps, self.steps_per_epoch):
                rng = np.random.default_rng([self.seed, epoch, step])
                yield self.batch(groups[step * size:(step + 1) * size], rng)

        return tf.data.Dataset.from_generator(generate, output_signature=self._signature).prefetch(2)
