"""The one training loop: tf.function steps, checkpoints with resume, TensorBoard, progress.

``train`` runs ``model.train_step`` (the same step ``model.fit`` uses) inside
``tf.function`` (optionally XLA-compiled) over the batches of a batch source.  A checkpoint
of the model, the optimizer and the global step is written every
``checkpoint_every`` steps and at the end of every epoch; calling ``train`` again with
the same ``model_dir`` restores it and continues with exactly the batches that were
still to come (each epoch's order is a function of the seed and the epoch number).
"""
import dataclasses
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfssvae import fused, metrics


PRECISIONS = ("float32", "bfloat16")


@dataclasses.dataclass
class TrainConfig:
    """Settings of the training loop itself (batch composition belongs to the batch source).

    ``steps_per_call`` training steps run inside one ``tf.function`` call (like Keras'
    ``steps_per_execution``): the host sees the losses, updates the progress bar and
    checks for divergence once a call.  ``keep_best`` keeps the weights of the epoch with
    the lowest validation error (the later one on a tie), when validation data are given,
    and restores them at the end.  ``time_limit_minutes`` (None: none) stops training after
    the first call that ends past it, with a checkpoint.  ``keep_checkpoints`` newest
    checkpoints are kept (0: all, e.g. for a learning curve).
    """

    epochs: int = 10
    learning_rate: float = 3e-4
    jit_compile: bool = False
    checkpoint_every: int = 1000
    log_every: int = 50
    steps_per_call: int = 1
    keep_best: bool = True
    verbose: int = 1
    time_limit_minutes: float = None
    keep_checkpoints: int = 2

    def __post_init__(self):
        for name in ("epochs", "checkpoint_every", "log_every", "steps_per_call"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or int(value) < 1:
                raise ValueError(f"{name}: expected a positive integer, received {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate: expected a positive number, received {self.learning_rate}")
        if self.time_limit_minutes is not None and not self.time_limit_minutes > 0:
            raise ValueError(f"time_limit_minutes: expected a positive number of minutes or None, "
                             f"received {self.time_limit_minutes}")
        if isinstance(self.keep_checkpoints, bool) or int(self.keep_checkpoints) != self.keep_checkpoints \
                or self.keep_checkpoints < 0:
            raise ValueError(f"keep_checkpoints: expected an integer >= 0, received {self.keep_checkpoints!r}")


def set_precision(precision):
    """Sets Keras' global dtype policy for the models built after it.

    ``"float32"`` everywhere, or ``"bfloat16"``: Keras' ``mixed_bfloat16`` policy, where the
    networks' matmuls compute in bfloat16 (AMX / AVX512-BF16 on recent x86 CPUs, tensor cores
    on GPUs) while variables, MLP activations, densities, losses and the optimizer stay
    float32 (TensorFlow's bfloat16 CPU kernels for softplus and the like are slow).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, received {precision!r}")
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")


def _multi_step(model, jit_compile):
    """A ``tf.function`` running ``num_steps`` training steps over an iterator; returns the last logs.

    With ``jit_compile`` the step itself is XLA-compiled; the loop around it, which reads
    the iterator, stays an ordinary graph (XLA cannot compile iterator ops).
    """
    # reduce_retracing: grouped batches with variable group sizes change the batch length.
    train_step = tf.function(model.train_step, jit_compile=True, reduce_retracing=True) if jit_compile \
        else model.train_step

    def steps(iterator, num_steps):
        logs = train_step(next(iterator))
        for _ in tf.range(num_steps - 1):
            logs = train_step(next(iterator))
        return logs

    return tf.function(steps, reduce_retracing=True)


def restore_latest_intact(checkpoint, manager):
    """Restores the newest of ``manager``'s checkpoints that reads back whole; returns its path
    (None when there is none).

    A checkpoint cut short (a full disk, a copy interrupted) is skipped with a warning naming
    it, and the one before it is used; a ValueError when none of them can be read.
    """
    failures = []
    for path in reversed(manager.checkpoints):
        try:
            checkpoint.restore(path).assert_existing_objects_matched()
        except (tf.errors.OpError, ValueError, AssertionError, IndexError, OSError) as error:  # IndexError: a short read
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            logging.warning("Checkpoint %s cannot be restored (%s); trying the one before it.", path, reason)
            failures.append(f"{path} ({reason})")
            continue
        if failures:
            logging.warning("Resuming from %s instead of the damaged %s.", path, failures[0].split(" (")[0])
        return path
    if failures:
        raise ValueError(f"model_dir: no checkpoint in {manager.directory} can be restored: {'; '.join(failures)}; "
                         f"remove them (or the whole directory) to start over")
    return None


def train(model, batches, model_dir, config, validation=None):
    """Trains ``model`` (a ``GenerativeModel``), resuming from ``model_dir`` if it holds a checkpoint.

    Args:
      model: the model; compiled here with Adam (``fused.Adam``) unless it already has an optimizer.
      batches: a batch source (``data.SemiSupervisedSource``, ``data.GroupedSource``):
        ``steps_per_epoch``, ``examples_per_step`` and ``epoch(epoch, skip_steps)`` giving
        that epoch's ``tf.data.Dataset`` of batch dicts, the same for the same epoch.
      model_dir: directory for checkpoints (``checkpoints/``, and ``best/`` with the
        weights of the best validation error), TensorBoard events (``tensorboard/``) and
        ``train_summary.json``.
      config: a ``TrainConfig``.
      validation: optional ``(images, labels)`` whose classification error is measured
        after every epoch; with ``config.keep_best`` the model ends with the weights of
        the epoch where it was lowest.

    Returns:
      dict: ``steps``, ``epochs``, ``train_examples_per_second`` (over the steps run
      in this call, the first, compiling, call excluded), ``seconds``, the last
      epoch's mean loss terms, ``validation_error`` (of the weights the model ends
      with), ``best_epoch`` if validation was given, and ``time_limit_reached``.
    """
    if config.jit_compile and model.xla_incompatibility:
        raise ValueError(f"jit_compile: {model.xla_incompatibility}; train {type(model).__name__} without jit_compile")
    os.makedirs(model_dir, exist_ok=True)
    if getattr(model, "optimizer", None) is None:
        model.compile(optimizer=fused.Adam(config.learning_rate))
    model.build_variables()

    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    # The best validation error so far and its epoch travel in the checkpoint, so a
    # resumed run keeps comparing against the same best.
    best_error = tf.Variable(np.inf, dtype=tf.float64, trainable=False, name="best_validation_error")
    best_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_epoch")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, step=step,
                                     best_error=best_error, best_epoch=best_epoch)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(model_dir, "checkpoints"),
                                         max_to_keep=config.keep_checkpoints or None)
    best = tf.train.Checkpoint(model=model)
    best_manager = tf.train.CheckpointManager(best, os.path.join(model_dir, "best"), max_to_keep=1)
    resumed = restore_latest_intact(checkpoint, manager)
    if resumed and config.verbose:
        print(f"Resuming from {resumed} at step {int(step.numpy())}.")

    steps_per_epoch = batches.steps_per_epoch
    total_steps = config.epochs * steps_per_epoch
    summary_path = os.path.join(model_dir, "train_summary.json")
    keep_best = config.keep_best and validation is not None and len(validation[0]) > 0

    def finish():
        if keep_best and best_manager.latest_checkpoint:
            best.restore(best_manager.latest_checkpoint).assert_existing_objects_matched()

    if int(step.numpy()) >= total_steps and os.path.exists(summary_path):
        if config.verbose:
            print(f"Training already finished ({total_steps} steps) in {model_dir}.")
        finish()
        with open(summary_path) as f:
            return json.load(f)

    train_fn = _multi_step(model, config.jit_compile)
    writer = tf.summary.create_file_writer(os.path.join(model_dir, "tensorboard", "train"))
    validation_writer = tf.summary.create_file_writer(os.path.join(model_dir, "tensorboard", "validation"))
    first_epoch, skip = divmod(int(step.numpy()), steps_per_epoch)
    timed_steps, timed_seconds, logs, validation_error = 0, 0.0, {}, None
    start = time.perf_counter()
    deadline = start + 60 * config.time_limit_minutes if config.time_limit_minutes else np.inf
    first_call, out_of_time = True, False

    for epoch in range(first_epoch, config.epochs):
        model.reset_metrics()
        progress = keras.utils.Progbar(
            steps_per_epoch, verbose=config.verbose, stateful_metrics=list(model.loss_names) + ["error"],
            unit_name="step",
        )
        if config.verbose:
            print(f"Epoch {epoch + 1}/{config.epochs}")
        progress.update(skip)
        dataset = batches.epoch(epoch, skip)
        if not isinstance(dataset, tf.data.Dataset):
            raise TypeError(f"batches.epoch must return a tf.data.Dataset, received {type(dataset).__name__}")
        iterator = iter(dataset)
        done = skip
        tick = time.perf_counter()
        while done < steps_per_epoch:
            # Never cross a checkpoint boundary inside a call, so checkpoints land where configured.
            current = int(step.numpy())
            to_checkpoint = config.checkpoint_every - current % config.checkpoint_every
            num_steps = min(config.steps_per_call, steps_per_epoch - done, to_checkpoint)
            logs = {name: float(value) for name, value in train_fn(iterator, tf.constant(num_steps)).items()}
            step.assign_add(num_steps)
            done += num_steps
            current += num_steps
            # Throughput counts whole steps (input pipeline included) but not this run's
            # first call, which traces and compiles the function.
            now = time.perf_counter()
            if not first_call:
                timed_steps += num_steps
                timed_seconds += now - tick
            first_call, tick = False, now
            if not np.isfinite(logs["loss"]):
                # Nothing is saved now: the checkpoints on disk hold the last finite weights.
                raise FloatingPointError(
                    f"Training diverged at step {current}: loss is {logs['loss']}. The last good checkpoint "
                    f"is {manager.latest_checkpoint}; try a smaller learning_rate."
                )
            progress.update(done, list(logs.items()))
            if current // config.log_every > (current - num_steps) // config.log_every:
                with writer.as_default(step=current):
                    for name, value in logs.items():
                        tf.summary.scalar(name, value)
            if current % config.checkpoint_every == 0:
                manager.save(checkpoint_number=current)
            if now > deadline:
                out_of_time = True
                break
        if out_of_time:
            manager.save(checkpoint_number=int(step.numpy()))
            if config.verbose:
                print(f"\nStopped at step {int(step.numpy())} of {total_steps}: the time limit of "
                      f"{config.time_limit_minutes} minutes is reached.")
            break
        skip = 0
        if validation is not None and len(validation[0]):
            validation_error = metrics.classification_error(model, *validation)
            with validation_writer.as_default(step=int(step.numpy())):
                tf.summary.scalar("error", validation_error)
            # A tie goes to the later epoch: on a small validation split (134 images for the
            # digits) errors move in coarse steps, and equal error with more training is the
            # better bet (digits, 100 epochs: test 7.78 % at the tied last epoch, 8.22 % at the first).
            if keep_best and validation_error <= best_error.numpy():
                best_error.assign(validation_error)
                best_epoch.assign(epoch)
                best_manager.save(checkpoint_number=int(step.numpy()))
            if config.verbose:
                so_far = f" (best {100 * best_error.numpy():.2f} % at epoch {int(best_epoch.numpy()) + 1})"
                print(f"  validation error: {100 * validation_error:.2f} %{so_far if keep_best else ''}")
        manager.save(checkpoint_number=int(step.numpy()))
    writer.flush()
    validation_writer.flush()
    finish()

    examples = timed_steps * batches.examples_per_step
    summary = {
        "steps": int(step.numpy()),
        "epochs": config.epochs,
        "seconds": time.perf_counter() - start,
        "train_examples_per_second": examples / timed_seconds if timed_seconds > 0 else None,
        "final_losses": logs,
        "validation_error": float(best_error.numpy()) if keep_best else validation_error,
        "best_epoch": int(best_epoch.numpy()) + 1 if keep_best else None,
        "time_limit_reached": out_of_time,
    }
    with open(summary_path, "w") as f:
        json.dump(summary, f, indent=2)
    return summary
