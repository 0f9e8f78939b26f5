"""Accuracy of a clustering (e.g. a discrete code) against labels under the best one-to-one matching."""
import numpy as np

from tfssvae.metrics.utils import check_factors, check_labels


def _matching(predicted, truth):
    """The checked inputs' confusion matrix and its Hungarian matching (most agreement):
    ``(confusion, rows, columns, predicted_values, truth_values)``."""
    from scipy.optimize import linear_sum_assignment  # pylint: disable=import-outside-toplevel

    predicted = check_labels(predicted, "predicted")
    truth = check_labels(truth, "truth", num_examples=len(predicted))
    predicted_values, predicted_ids = np.unique(predicted, return_inverse=True)
    truth_values, truth_ids = np.unique(truth, return_inverse=True)
    confusion = np.zeros((len(predicted_values), len(truth_values)), dtype=np.int64)
    np.add.at(confusion, (predicted_ids, truth_ids), 1)
    rows, columns = linear_sum_assignment(confusion, maximize=True)
    return confusion, rows, columns, predicted_values, truth_values


def best_matching(predicted, truth):
    """The best one-to-one matching of cluster ids to labels (the one ``best_matching_accuracy`` scores).

    Args:
        predicted: ``[N]`` cluster ids.
        truth: ``[N]`` true labels.

    Returns:
        dict ``{label: cluster id}`` over the matched labels; where there are more labels
        than cluster ids, the labels left unmatched are absent.

    Raises:
        ValueError: as ``best_matching_accuracy``.
    """
    _, rows, columns, predicted_values, truth_values = _matching(predicted, truth)
    return {truth_values[c].item(): predicted_values[r].item() for r, c in zip(rows, columns)}


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
    confusion, rows, columns, _, _ = _matching(predicted, truth)
    return float(confusion[rows, columns].sum() / confusion.sum())


def code_information(code, factors):
    """What a discrete code carries of each factor: ``I(code; v_k) / H(v_k)`` per factor k.

    The plug-in mutual information of the code's values and each factor's values, in
    nats, over the factor's entropy (MIG's normalisation): 1 when the code determines the
    factor, 0 when they are independent (the plug-in estimate of an independent pair is
    biased up by about ``(|code| - 1)(|v_k| - 1) / (2 N)`` nats).  It tells what a code
    captured when it is not the factor it was meant for (CascadeVAE's d against the
    sprites' shape, orientation, ...).

    Args:
        code: ``[N]`` discrete values (any sortable values).
        factors: int ``[N, F]`` ground-truth factor values.

    Returns:
        float64 ``[F]``, NaN for a constant factor (no entropy to normalise by).

    Raises:
        ValueError: on bad shapes, lengths that differ or non-integer factors.
    """
    from sklearn.metrics import mutual_info_score  # pylint: disable=import-outside-toplevel

    code = check_labels(code, "code")
    factors = check_factors(factors, len(code), "code value")
    out = np.full(factors.shape[1], np.nan)
    for k in range(factors.shape[1]):
        entropy = mutual_info_score(factors[:, k], factors[:, k])  # I(v; v) = H(v)
        if entropy > 0:
            out[k] = mutual_info_score(code, factors[:, k]) / entropy
    return out
