"""Linear probes and nearest-prototype (n-shot) accuracy of learnt features (the ML-VAE evaluation)."""
import numpy as np

from tfssvae.data.validation import check_int
from tfssvae.metrics.utils import check_labels, check_matrix


def linear_probe_accuracy(train_features, train_labels, test_features, test_labels,
                          max_iter=1000):
    """Test accuracy of a linear classifier trained on features (ML-VAE probes).

    Features are standardised with the training mean and std, then a multinomial
    logistic regression (scikit-learn, L2, C = 1) is fitted.

    Args:
        train_features: float ``[N_train, D]``.
        train_labels: ``[N_train]`` with at least two classes.
        test_features: float ``[N_test, D]``.
        test_labels: ``[N_test]``; classes unseen in training count as errors.
        max_iter: iterations of the solver, >= 1.

    Returns:
        The fraction of test examples classified correctly.

    Raises:
        ValueError: on bad shapes, empty or non-finite features, or one training class.
    """
    # pylint: disable=import-outside-toplevel
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_features = check_matrix(train_features, "train_features")
    train_labels = check_labels(train_labels, "train_labels", len(train_features))
    test_features = check_matrix(test_features, "test_features",
                                  num_columns=train_features.shape[1])
    test_labels = check_labels(test_labels, "test_labels", len(test_features))
    max_iter = check_int(max_iter, "max_iter", 1)
    if len(np.unique(train_labels)) < 2:
        raise ValueError(
            f"train_labels: expected at least two classes, received only "
            f"{train_labels[0]!r}")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    probe.fit(train_features, train_labels)
    return float(np.mean(probe.predict(test_features) == test_labels))


def nearest_prototype_accuracy(prototypes, prototype_labels, queries, query_labels):
    """n-shot accuracy: each query takes the label of its nearest prototype.

    Distances are Euclidean; on a tie the first prototype wins. Computed in chunks of
    queries so that the ``[chunk, P, D]`` differences stay small.

    Args:
        prototypes: float ``[P, D]``, e.g. the group content of each support group.
        prototype_labels: ``[P]``.
        queries: float ``[Q, D]``.
        query_labels: ``[Q]``.

    Returns:
        The fraction of queries whose nearest prototype has their label.

    Raises:
        ValueError: on bad shapes, empty or non-finite arrays.
    """
    prototypes = check_matrix(prototypes, "prototypes")
    prototype_labels = check_labels(prototype_labels, "prototype_labels", len(prototypes))
    queries = check_matrix(queries, "queries", num_columns=prototypes.shape[1])
    query_labels = check_labels(query_labels, "query_labels", len(queries))
    chunk = max(1, 2 ** 22 // prototypes.size)  # about 32 MiB of float64 differences
    nearest = np.concatenate([
        np.square(queries[start:start + chunk, None, :] - prototypes[None]).sum(axis=2)
        .argmin(axis=1)
        for start in range(0, len(queries), chunk)])
    return float(np.mean(prototype_labels[nearest] == query_labels))
