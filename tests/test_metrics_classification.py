"""Tests for tfssvae.metrics.classification with a stand-in model whose classes are known."""
import numpy as np
import pytest
import tensorflow as tf

from tfssvae import metrics


class ArgmaxModel:
    """Predicts the position of the largest of an example's 4 features."""

    def input_signature(self):
        return tf.TensorSpec((None, 4), tf.float32, name="images")

    def classify(self, images):
        return {"class": tf.argmax(images, axis=1)}


def test_classification_error_counts_the_wrong_predictions_over_batches():
    features = np.random.default_rng(0).normal(size=(2500, 4)).astype(np.float32)
    labels = features.argmax(axis=1)
    labels[::10] = (labels[::10] + 1) % 4  # every tenth label wrong: 250 of 2500
    model = ArgmaxModel()
    np.testing.assert_array_equal(metrics.predict_classes(model, features, batch_size=1000), features.argmax(1))
    assert metrics.classification_error(model, features, labels, batch_size=1000) == pytest.approx(0.1)


def test_classification_bad_input():
    with pytest.raises(ValueError, match=r"labels: expected shape \(3,\)"):
        metrics.classification_error(ArgmaxModel(), np.zeros((3, 4), np.float32), np.zeros(2))
    with pytest.raises(ValueError, match="images: expected at least one example"):
        metrics.predict_classes(ArgmaxModel(), np.zeros((0, 4), np.float32))
