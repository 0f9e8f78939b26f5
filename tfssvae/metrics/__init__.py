"""Evaluation metrics, one a module (the layout of disentanglement_lib's metrics):

- ``classification``: ``predict_classes``, ``classification_error`` (semi-supervised models);
- ``probes``: ``linear_probe_accuracy``, ``nearest_prototype_accuracy`` (ML-VAE);
- ``factor_vae``: ``factor_vae_score``; ``mig``: ``mutual_information_gap``;
- ``matching``: ``best_matching``, ``best_matching_accuracy`` and ``code_information`` (a discrete code against labels);
- ``utils``: the input checks they share.

The names are re-exported here, so ``from tfssvae import metrics; metrics.factor_vae_score``
works as before the split.
"""
from tfssvae.metrics.classification import classification_error, predict_classes
from tfssvae.metrics.factor_vae import factor_vae_score
from tfssvae.metrics.matching import best_matching, best_matching_accuracy, code_information
from tfssvae.metrics.mig import mutual_information_gap
from tfssvae.metrics.probes import linear_probe_accuracy, nearest_prototype_accuracy

__all__ = [
    "best_matching", "best_matching_accuracy", "classification_error", "code_information", "factor_vae_score",
    "linear_probe_accuracy", "mutual_information_gap", "nearest_prototype_accuracy", "predict_classes",
]
