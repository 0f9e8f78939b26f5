"""Data: sources (digits, MNIST-format idx directories, TFDS), checks, label splits and
tf.data pipelines that mix labelled and unlabelled examples.

Batches are dicts ``{"x": float32 [batch, height, width, channels], "y": int32
[batch], "y_mask": bool [batch]}``; ``y_mask`` marks which labels are observed.
"""
from tfssvae.data.groups import GroupedSource
from tfssvae.data.groups import make_groups
from tfssvae.data.groups import training_rows
from tfssvae.data.pipeline import SemiSupervisedSource
from tfssvae.data.pipeline import evaluation_batches
from tfssvae.data.pipeline import semi_supervised_batches
from tfssvae.data.pipeline import steps_per_epoch
from tfssvae.data.sources import DataSource
from tfssvae.data.sources import load_source
from tfssvae.data.splits import balanced_labelled_indices
from tfssvae.data.splits import validation_split
from tfssvae.data.validation import check_images
from tfssvae.data.validation import check_labels

__all__ = [
    "DataSource",
    "load_source",
    "check_images",
    "check_labels",
    "balanced_labelled_indices",
    "validation_split",
    "semi_supervised_batches",
    "SemiSupervisedSource",
    "GroupedSource",
    "make_groups",
    "training_rows",
    "evaluation_batches",
    "steps_per_epoch",
]
