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


def test_best_matching_is_the_mapping_that_scores_the_accuracy():
    truth = np.random.default_rng(1).integers(0, 4, size=200)
    relabel = np.array([7, 5, 9, 6])
    noisy = np.where(np.arange(200) % 10 == 0, 5, relabel[truth])  # a tenth sent to one cluster
    assert metrics.best_matching(noisy, truth) == {0: 7, 1: 5, 2: 9, 3: 6}
    # With fewer clusters than labels, the labels left over are absent.
    matched = metrics.best_matching(np.minimum(truth, 1), truth)
    assert len(matched) == 2 and sorted(matched.values()) == [0, 1]
    assert metrics.best_matching_accuracy(np.minimum(truth, 1), truth) == pytest.approx(
        np.mean([matched.get(t) == min(t, 1) for t in truth]))


def test_matching_probe_and_prototype_bad_input():
    with pytest.raises(ValueError, match="truth: expected 3 labels"):
        metrics.best_matching_accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="predicted: expected at least one label"):
        metrics.best_matching_accuracy([], [])
    with pytest.raises(ValueError, match="predicted: expected a rank-1 array"):
        metrics.best_matching_accuracy(np.zeros((2, 2)), [0, 1])


def test_code_information_against_the_formula_and_its_extremes():
    rng = np.random.default_rng(0)
    n = 4000
    shape = rng.integers(0, 3, n)
    orientation = rng.integers(0, 4, n)
    constant = np.zeros(n, int)
    factors = np.stack([shape, orientation, constant], axis=1)
    # A relabelled copy of the shape carries all of it; of the orientation, only what the
    # sample's chance dependence gives.
    carried = metrics.code_information(np.array([7, 2, 5])[shape], factors)
    assert carried[0] == pytest.approx(1.0, abs=1e-12)  # exact up to float rounding
    # The plug-in bias of an independent pair: (3 - 1)(4 - 1) / (2 n) nats over H = log 4.
    assert 0.0 <= carried[1] < 5 * 6 / (2 * n) / np.log(4)
    assert np.isnan(carried[2])
    # A code that is the shape for half the examples and noise for the rest: the formula
    # written out with the empirical joint distribution.
    code = np.where(rng.random(n) < 0.5, shape, rng.integers(0, 3, n))
    joint = np.zeros((3, 3))
    np.add.at(joint, (code, shape), 1.0)
    joint /= n
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    information = np.sum(joint * np.log(joint / outer))
    entropy = -np.sum(joint.sum(0) * np.log(joint.sum(0)))
    assert metrics.code_information(code, factors[:, :1])[0] == pytest.approx(information / entropy, rel=1e-9)
    with pytest.raises(ValueError, match="factors: expected 3 rows"):
        metrics.code_information([0, 1, 2], np.zeros((2, 1), int))
    with pytest.raises(ValueError, match="factors: expected integer values"):
        metrics.code_information([0, 1], np.zeros((2, 1)))
