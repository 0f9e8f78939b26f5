"""Tests for tfssvae.metrics.probes: linear probes and nearest-prototype accuracy."""
import numpy as np
import pytest

from tfssvae import metrics


def blobs(n, seed, num_classes=3, dims=5, spread=10.0):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(scale=spread, size=(num_classes, dims))
    labels = rng.integers(0, num_classes, size=n)
    return centres[labels] + rng.normal(size=(n, dims)), labels


def test_linear_probe_on_separable_data_is_near_one():
    train, train_labels = blobs(300, 0)
    test, test_labels = blobs(300, 1)
    assert metrics.linear_probe_accuracy(train, train_labels, test, test_labels) > 0.98


def test_linear_probe_standardises_features():
    # Only feature 0 carries the label, at a scale of 1e-4; without standardisation
    # the L2 penalty on its huge weight would leave the probe near chance.
    rng = np.random.default_rng(5)

    def data(n):
        labels = rng.integers(0, 2, size=n)
        features = rng.normal(size=(n, 4))
        features[:, 0] = 1e-4 * (4.0 * labels + rng.normal(size=n))
        return features, labels

    assert metrics.linear_probe_accuracy(*data(300), *data(300)) > 0.95


def test_linear_probe_on_random_labels_is_near_chance():
    rng = np.random.default_rng(0)
    accuracy = metrics.linear_probe_accuracy(
        rng.normal(size=(600, 5)), rng.integers(0, 3, size=600),
        rng.normal(size=(600, 5)), rng.integers(0, 3, size=600))
    assert abs(accuracy - 1 / 3) < 0.1


def test_nearest_prototype_equals_brute_force():
    rng = np.random.default_rng(0)
    prototypes, prototype_labels = rng.normal(size=(12, 4)), rng.integers(0, 4, size=12)
    queries, query_labels = rng.normal(size=(500, 4)), rng.integers(0, 4, size=500)
    expected = np.mean([
        prototype_labels[np.argmin([np.linalg.norm(q - p) for p in prototypes])] == label
        for q, label in zip(queries, query_labels)])
    assert metrics.nearest_prototype_accuracy(
        prototypes, prototype_labels, queries, query_labels) == pytest.approx(expected)
    # Queries at the prototypes themselves are all right.
    assert metrics.nearest_prototype_accuracy(
        prototypes, prototype_labels, prototypes + 1e-6, prototype_labels) == 1.0


def test_probe_and_prototype_bad_input():
    features = np.random.default_rng(0).normal(size=(20, 3))
    labels = np.arange(20) % 2
    with pytest.raises(ValueError, match="test_features: expected 3 columns, received 2"):
        metrics.linear_probe_accuracy(features, labels, features[:, :2], labels)
    with pytest.raises(ValueError, match="train_labels: expected at least two classes"):
        metrics.linear_probe_accuracy(features, np.zeros(20), features, labels)
    with pytest.raises(ValueError, match="train_labels: expected 20 labels"):
        metrics.linear_probe_accuracy(features, labels[:5], features, labels)
    with pytest.raises(ValueError, match="max_iter"):
        metrics.linear_probe_accuracy(features, labels, features, labels, max_iter=0)
    with pytest.raises(ValueError, match="queries: expected 3 columns, received 4"):
        metrics.nearest_prototype_accuracy(features, labels, np.zeros((5, 4)), np.zeros(5))
    with pytest.raises(ValueError, match="prototype_labels: expected 20 labels"):
        metrics.nearest_prototype_accuracy(features, labels[:3], features, labels)
    with pytest.raises(ValueError, match="prototypes: expected finite values"):
        metrics.nearest_prototype_accuracy(features * np.inf, labels, features, labels)


def one_hot_source(num_classes=10, per_class=60, seed=0):
    """A DataSource whose 4x4 images light pixel ``class`` alone: a flattened image is the class one-hot."""
    from tfssvae.data import DataSource

    rng = np.random.default_rng(seed)

    def split(n):
        labels = rng.permutation(np.repeat(np.arange(num_classes), n)).astype(np.int32)
        images = np.zeros((len(labels), 16), np.float32)
        images[np.arange(len(labels)), labels] = 1.0
        return images.reshape(-1, 4, 4, 1), labels

    train, test = split(per_class), split(per_class // 2)
    return DataSource("one_hot", *train, *test, num_classes)


def test_the_evaluation_probe_reads_a_one_hot_code_perfectly_and_noise_at_chance():
    import tensorflow as tf
    from tfssvae import evaluation

    source = one_hot_source()

    def one_hot_code(images):  # the code is the class one-hot itself
        return {"mean": tf.reshape(images, [-1, 16])[:, :10]}

    def noise_code(images):  # the code knows nothing of the image
        return {"mean": tf.random.stateless_normal([tf.shape(images)[0], 10], seed=[1, 2])}

    assert evaluation.latent_probe_accuracy(one_hot_code, source, seed=0) == 1.0
    accuracy = evaluation.latent_probe_accuracy(noise_code, source, seed=0)
    # 300 test examples, chance 0.1: the binomial s.d. is 0.017, so 0.1 +- 0.07 is 4 s.d.
    assert abs(accuracy - 0.1) < 0.07, accuracy
