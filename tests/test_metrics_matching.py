"""Tests for tfssvae.metrics.matching: best one-to-one matching against brute force over permutations."""
import itertools

import numpy as np
import pytest

from tfssvae import metrics


def brute_force_matching(predicted, truth):
    p_values, t_values = np.unique(predicted), np.unique(truth)
    best = 0
    if len(p_values) >= len(t_values):
        for image in itertools.permutations(p_values, len(t_values)):
            mapping = dict(zip(t_values, image))
            best = max(best, sum(mapping[t] == p for p, t in zip(predicted, truth)))
    else:
        for image in itertools.permutations(t_values, len(p_values)):
            mapping = dict(zip(p_values, image))
            best = max(best, sum(mapping[p] == t for p, t in zip(predicted, truth)))
    return best / len(predicted)


@pytest.mark.parametrize("num_predicted,num_truth", [(3, 3), (4, 4), (5, 3), (2, 4)])
def test_best_matching_equals_brute_force(num_predicted, num_truth):
    rng = np.random.default_rng(num_predicted * 10 + num_truth)
    for _ in range(5):
        truth = rng.integers(0, num_truth, size=60)
        # Partly informative clusters, so the best matching is not trivial.
        predicted = np.where(rng.random(60) < 0.5, truth % num_predicted,
                             rng.integers(0, num_predicted, size=60))
        assert metrics.best_matching_accuracy(predicted, truth) == pytest.approx(
            brute_force_matching(predicted, truth))


def test_best_matching_of_a_relabelled_clustering_is_one():
    truth = np.random.default_rng(0).integers(0, 6, size=500)
    relabel = np.array([4, 0, 5, 1, 3, 2]) + 10
    assert metrics.best_matching_accuracy(relabel[truth], truth) == 1.0
    names = np.array(["a", "b", "c", "d", "e", "f"])
    assert metrics.best_matching_accuracy(names[truth], truth) == 1.0


def test_matching_probe_and_prototype_bad_input():
    with pytest.raises(ValueError, match="truth: expected 3 labels"):
        metrics.best_matching_accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="predicted: expected at least one label"):
        metrics.best_matching_accuracy([], [])
    with pytest.raises(ValueError, match="predicted: expected a rank-1 array"):
        metrics.best_matching_accuracy(np.zeros((2, 2)), [0, 1])
