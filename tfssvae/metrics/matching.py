"""Accuracy of a clustering (e.g. a discrete code) against labels under the best one-to-one matching."""
import numpy as np

from tfssvae.metrics.utils import check_labels


def best_matching_accuracy(predicted, truth):
    """Accuracy of cluster ids against labels under the best one-to-one matching.

    The confusion matrix of predicted values against true values is matched by the
    Hungarian method (maximum total agreement); the numbers of distinct values may
    differ, and then the values left unmatched count as errors.

    Args:
        predicted: ``[N]`` cluster ids (any sortable values, e.g. the discrete code).
        truth: ``[N]`` true labels.

    Returns:
        The fraction of examples whose cluster is matched to their label, in [0, 1].

    Raises:
        ValueError: if the arrays are not rank 1, empty or of different lengths.
    """
    from scipy.optimize import linear_sum_assignment  # pylint: disable=import-outside-toplevel

    predicted = check_labels(predicted, "predicted")
    truth = check_labels(truth, "truth", num_examples=len(predicted))
    predicted_values, predicted_ids = np.unique(predicted, return_inverse=True)
    truth_values, truth_ids = np.unique(truth, return_inverse=True)
    confusion = np.zeros((len(predicted_values), len(truth_values)), dtype=np.int64)
    np.add.at(confusion, (predicted_ids, truth_ids), 1)
    rows, columns = linear_sum_assignment(confusion, maximize=True)
    return float(confusion[rows, columns].sum() / len(predicted))
