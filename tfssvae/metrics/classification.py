"""Classification error of a model's predicted classes (the semi-supervised models' test error)."""
import numpy as np
import tensorflow as tf


def predict_classes(model, images, batch_size=1000):
    """Predicted class ``int64 [num_examples]`` for ``images`` ``[num_examples, *input_shape]``.

    Runs ``model.classify`` in a ``tf.function`` over batches, so any size fits in memory.
    """
    if len(images) == 0:
        raise ValueError("images: expected at least one example, received an empty array")
    classify = getattr(model, "_predict_class_function", None)
    if classify is None:
        # One traced function per model, reused by every call (each epoch's validation).
        classify = tf.function(lambda x: model.classify(x)["class"], input_signature=[model.input_signature()])
        model._predict_class_function = classify
    predictions = [
        classify(tf.convert_to_tensor(images[start:start + batch_size], tf.float32)).numpy()
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(predictions)


def classification_error(model, images, labels, batch_size=1000):
    """Fraction of ``images`` whose predicted class differs from ``labels`` ``[num_examples]``."""
    labels = np.asarray(labels)
    if labels.shape != (len(images),):
        raise ValueError(f"labels: expected shape ({len(images)},), received {labels.shape}")
    return float(np.mean(predict_classes(model, images, batch_size) != labels))
