"""A supervised count baseline for the multi-digit experiment: a small CNN on the labelled canvases alone.

The semi-supervised multi-digit model (``models.MultiDigitModel``) learns to count from
all of a run's training canvases, of which only a fraction ``count_supervision`` carry
their count.  This baseline asks what those labelled canvases give without the others: a
plain convolutional classifier of the count, trained on exactly the canvases whose count
the run observes (``experiment.multi_digit_canvases``, the function the run itself uses),
its epoch chosen on the run's validation canvases and its accuracy measured on the run's
test canvases.  The semi-supervised model is worth its machinery where it beats this.

The network (``build_counter``)::

    canvas [batch, H, W, 1]
      -> conv 3x3 stride 2, 32 filters, ReLU -> conv 3x3 stride 2, 64 -> conv 3x3 stride 2, 64
      -> flatten -> dense 128, ReLU -> dense K + 1: logits of the counts 0..K

trained with Adam on the cross-entropy of the count, at most ``epochs`` epochs, stopped
when the validation count accuracy has not improved for ``patience`` epochs, and the
weights of the best validation epoch kept.
"""
import time

import keras
import numpy as np

from tfssvae.data import multi_digit as multi_digit_data
from tfssvae.data.validation import check_int

#: The baseline's training settings (declared here once; the benchmark script's flags default to them).
DEFAULTS = dict(filters=(32, 64, 64), dense_units=128, learning_rate=1e-3, batch_size=32, epochs=100, patience=10)


def build_counter(canvas_shape, max_digits, filters=DEFAULTS["filters"], dense_units=DEFAULTS["dense_units"]):
    """The count classifier: canvases ``[batch, H, W, C]`` -> logits ``[batch, max_digits + 1]``.

    Args:
      canvas_shape: ``(H, W, C)``.
      max_digits: K >= 1; the classes are the counts 0..K.
      filters: filters of each 3x3 stride-2 convolution, in order; ``()`` gives an MLP
        (flatten, the dense layer, the logits), the reader the multi-digit model had first.
      dense_units: width of the hidden dense layer.

    Returns:
      an uncompiled ``keras.Sequential``.
    """
    canvas_shape = tuple(canvas_shape)
    if len(canvas_shape) != 3 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1
                                     for v in canvas_shape):
        raise ValueError(f"canvas_shape: expected (height, width, channels) of positive integers, received "
                         f"{canvas_shape!r}")
    max_digits = check_int(max_digits, "max_digits", 1)
    if (not isinstance(filters, (tuple, list))
            or any(isinstance(f, bool) or not isinstance(f, (int, np.integer)) or f < 1 for f in filters)):
        raise ValueError(f"filters: expected a sequence of positive integers, received {filters!r}")
    dense_units = check_int(dense_units, "dense_units", 1)
    layers = [keras.Input(canvas_shape)]
    layers += [keras.layers.Conv2D(int(f), 3, strides=2, padding="same", activation="relu") for f in filters]
    layers += [keras.layers.Flatten(), keras.layers.Dense(dense_units, activation="relu"),
               keras.layers.Dense(max_digits + 1)]
    return keras.Sequential(layers, name="count_baseline")


def _check_set(x, counts, name, canvas_shape=None):
    """``(x [n, H, W, C] float32 in [0, 1], counts int32 [n])`` checked, as numpy arrays."""
    x = np.asarray(x, np.float32)
    counts = np.asarray(counts)
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"{name}: expected canvases [n >= 1, height, width, channels], received shape {x.shape}")
    if canvas_shape is not None and x.shape[1:] != tuple(canvas_shape):
        raise ValueError(f"{name}: expected canvases of shape {tuple(canvas_shape)}, received {x.shape[1:]}")
    if counts.shape != (len(x),) or not np.issubdtype(counts.dtype, np.integer):
        raise ValueError(f"{name}: expected integer counts of shape ({len(x)},), received {counts.dtype} "
                         f"{counts.shape}")
    return x, counts.astype(np.int32)


def fit_counter(model, train, validation, epochs=DEFAULTS["epochs"], patience=DEFAULTS["patience"],
                learning_rate=DEFAULTS["learning_rate"], batch_size=DEFAULTS["batch_size"], verbose=0):
    """Trains ``model`` (``build_counter``) on ``train`` and keeps its best epoch on ``validation``.

    Args:
      model: logits ``[batch, K + 1]`` of canvases ``[batch, H, W, C]``.
      train, validation: ``(canvases [n, H, W, C] in [0, 1], counts int [n] in 0..K)``.
      epochs: at most this many epochs.
      patience: stop after this many epochs without a better validation count accuracy.
      learning_rate, batch_size: Adam's step and the minibatch.
      verbose: Keras' ``fit`` verbosity.

    Returns:
      dict: ``epochs_trained``, ``best_epoch`` (1-based) and ``validation_count_accuracy`` of
      the kept weights.  The model holds the weights of its best validation epoch.
    """
    max_digits = model.output_shape[-1] - 1
    train = _check_set(*train, "train", model.input_shape[1:])
    validation = _check_set(*validation, "validation", model.input_shape[1:])
    for name, (_, counts) in (("train", train), ("validation", validation)):
        multi_digit_data.check_counts(counts, max_digits, name=f"{name} counts")
    epochs, patience = check_int(epochs, "epochs", 1), check_int(patience, "patience", 1)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    # Keras 3 restores the best epoch's weights at the end of training whether or not it stopped
    # early; ties keep the earlier epoch (an improvement must be strict).
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=patience,
                                         restore_best_weights=True)
    history = model.fit(train[0], train[1], batch_size=batch_size, epochs=epochs, validation_data=validation,
                        callbacks=[stop], shuffle=True, verbose=verbose)
    accuracy = history.history["val_accuracy"]
    best = int(np.argmax(accuracy))  # the first of equal bests, as EarlyStopping keeps
    return {"epochs_trained": len(accuracy), "best_epoch": best + 1, "validation_count_accuracy": float(accuracy[best])}


def count_accuracy(model, canvases, counts, batch_size=500):
    """Fraction of ``canvases`` ``[n, H, W, C]`` whose likeliest count under ``model`` is ``counts`` ``[n]``."""
    canvases, counts = _check_set(canvases, counts, "canvases", model.input_shape[1:])
    logits = model.predict(canvases, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == counts))


def labelled_set(canvases):
    """The canvases the baseline trains on: ``(x [n_labelled, H, W, 1], counts [n_labelled])``, the training
    canvases of ``experiment.multi_digit_canvases`` whose count the run observes, in their order."""
    mask = np.asarray(canvases["labelled"], bool)
    return canvases["train"]["x"][mask], canvases["train"]["count"][mask]


def run(config, source=None, verbose=0, **settings):
    """The baseline for a multi-digit run config: its labelled, validation and test canvases.

    Args:
      config: a multi-digit run config (``configs.get("multi_digit", {...})``); its
        ``count_supervision``, ``seed``, canvas settings and K decide the canvases, exactly
        as in ``experiment.run``.  Its ``validation_size`` must not be 0 (the validation
        canvases choose the epoch).
      source: the digit source, by default ``data.load_source(config.dataset, config.data_dir)``.
      verbose: Keras' ``fit`` verbosity.
      **settings: overrides of ``DEFAULTS`` (``epochs``, ``patience``, ``learning_rate``,
        ``batch_size``, ``filters``, ``dense_units``).

    Returns:
      dict: ``test_count_accuracy``, ``validation_count_accuracy``, ``labelled_canvases``,
      ``test_canvases``, ``validation_canvases``, ``count_supervision``, ``seed``,
      ``max_digits``, ``epochs_trained``, ``best_epoch``, ``seconds`` (composing the
      canvases, training and testing) and the settings used.
    """
    # Imported here: experiment imports the whole package (models, export), which this module's
    # building blocks do not need.
    from tfssvae import data as data_lib
    from tfssvae import experiment

    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"settings: unknown {unknown}; expected some of {sorted(DEFAULTS)}")
    settings = {**DEFAULTS, **settings}
    if config.model.name != "multi_digit":
        raise ValueError(f"config: expected a multi_digit run config, received model {config.model.name!r}")
    experiment.validate(config)
    if config.validation_size == 0:
        raise ValueError("validation_size: the baseline chooses its epoch on the validation canvases; expected -1 "
                         "or a positive number, received 0")
    start = time.perf_counter()
    if source is None:
        source = data_lib.load_source(config.dataset, config.data_dir)
    canvases = experiment.multi_digit_canvases(config, source)
    train = labelled_set(canvases)
    if len(train[0]) == 0:
        raise ValueError(f"count_supervision: {config.count_supervision} observes no count of the "
                         f"{config.train_canvases} training canvases; the baseline has nothing to train on")
    keras.utils.set_random_seed(config.seed)  # initial weights and shuffling: repeatable on CPU
    max_digits = experiment.multi_digit_max_digits(config)
    model = build_counter(train[0].shape[1:], max_digits, settings["filters"], settings["dense_units"])
    validation = (canvases["validation"]["x"], canvases["validation"]["count"])
    fitted = fit_counter(model, train, validation, settings["epochs"], settings["patience"],
                         settings["learning_rate"], settings["batch_size"], verbose)
    test = canvases["test"]
    return {"test_count_accuracy": count_accuracy(model, test["x"], test["count"]), **fitted,
            "labelled_canvases": int(len(train[0])), "test_canvases": int(len(test["x"])),
            "validation_canvases": int(len(validation[0])), "count_supervision": float(config.count_supervision),
            "seed": int(config.seed), "max_digits": int(max_digits), "dataset": config.dataset,
            "seconds": time.perf_counter() - start, "settings": {k: (list(v) if isinstance(v, tuple) else v)
                                                                  for k, v in settings.items()}}


__all__ = ["DEFAULTS", "build_counter", "fit_counter", "count_accuracy", "labelled_set", "run"]
