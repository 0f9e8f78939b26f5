r"""Evaluates an exported SavedModel: test classification error through its serving signature.

  python -m binaries.evaluate --saved_model=saved_models/m2/1 --dataset=digits
"""
import json
import sys

import numpy as np
from absl import app, flags, logging

flags.DEFINE_string("saved_model", None, "A SavedModel version directory written by tfssvae.")
flags.DEFINE_string("dataset", "digits", "Data source whose test split is evaluated.")
flags.DEFINE_string("data_dir", None, "TFDS data directory for 'tfds:' sources.")
flags.DEFINE_integer("batch_size", 1000, "Evaluation batch size.")
flags.mark_flag_as_required("saved_model")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    import tensorflow as tf

    from tfssvae import data as data_lib

    try:
        source = data_lib.load_source(FLAGS.dataset, FLAGS.data_dir)
    except ValueError as error:
        print(f"tfssvae-evaluate: error: {error}", file=sys.stderr)
        sys.exit(2)
    classify = tf.saved_model.load(FLAGS.saved_model).signatures["classify"]
    expected = tuple(classify.structured_input_signature[1]["images"].shape[1:])
    if expected != source.image_shape:
        print(f"tfssvae-evaluate: error: the model takes images of shape {expected}, "
              f"{FLAGS.dataset} has {source.image_shape}", file=sys.stderr)
        sys.exit(2)
    predicted = np.concatenate([
        classify(images=tf.constant(source.test_images[i:i + FLAGS.batch_size]))["class"].numpy()
        for i in range(0, len(source.test_images), FLAGS.batch_size)
    ])
    error = float(np.mean(predicted != source.test_labels))
    print(json.dumps({"saved_model": FLAGS.saved_model, "dataset": FLAGS.dataset,
                      "test_examples": len(predicted), "test_error": error}))


def run():
    app.run(main)


if __name__ == "__main__":
    run()
