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

from tfssvae import metrics


@dataclasses.dataclass
class TrainConfig:
    """Settings of the training loop itself (batch composition belongs to the batch source)."""

    epochs: int = 10
    learning_rate: float = 3e-4
    jit_compile: bool = False
    checkpoint_every: int = 1000
    log_every: int = 50
    verbose: int = 1

    def __post_init__(self):
        for name in ("epochs", "checkpoint_every", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: expected a positive integer, received {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate: expected a positive number, received {self.learning_rate}")


def train(model, batches, model_dir, config, validation=None):
    """Trains ``model`` (a ``GenerativeModel``), resuming from ``model_dir`` if it holds a checkpoint.

    Args:
      model: the model; compiled here with Adam unless it already has an optimizer.
      batches: a batch source (``data.SemiSupervisedSource``, ``data.GroupedSource``):
        ``steps_per_epoch``, ``examples_per_step`` and ``epoch(epoch, skip_steps)`` giving
        that epoch's ``tf.data.Dataset`` of batch dicts, the same for the same epoch.
      model_dir: directory for checkpoints (``checkpoints/``), TensorBoard events
        (``tensorboard/``) and ``train_summary.json``.
      config: a ``TrainConfig``.
      validation: optional ``(images, labels)`` whose classification error is
        measured after every epoch.

    Returns:
      dict: ``steps``, ``epochs``, ``train_examples_per_second`` (over the steps run
      in this call, the first, compiling, step excluded), ``seconds``, the last
      epoch's mean loss terms and ``validation_error`` if validation was given.
    """
    os.makedirs(model_dir, exist_ok=True)
    if getattr(model, "optimizer", None) is None:
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    model.build_variables()

    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, step=step)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(model_dir, "checkpoints"), max_to_keep=2)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        if config.verbose:
            print(f"Resuming from {manager.latest_checkpoint} at step {int(step.numpy())}.")

    steps_per_epoch = batches.steps_per_epoch
    total_steps = config.epochs * steps_per_epoch
    summary_path = os.path.join(model_dir, "train_summary.json")
    if int(step.numpy()) >= total_steps and os.path.exists(summary_path):
        if config.verbose:
            print(f"Training already finished ({total_steps} steps) in {model_dir}.")
        with open(summary_path) as f:
            return json.load(f)

    # reduce_retracing: grouped batches with variable group sizes change the batch length.
    train_fn = tf.function(model.train_step, jit_compile=config.jit_compile, reduce_retracing=True)
    writer = tf.summary.create_file_writer(os.path.join(model_dir, "tensorboard", "train"))
    validation_writer = tf.summary.create_file_writer(os.path.join(model_dir, "tensorboard", "validation"))
    first_epoch, skip = divmod(int(step.numpy()), steps_per_epoch)
    timed_steps, timed_seconds, logs, validation_error = 0, 0.0, {}, None
    start = time.perf_counter()

    for epoch in range(first_epoch, config.epochs):
        model.reset_metrics()
        progress = keras.utils.Progbar(
            steps_per_epoch, verbose=config.verbose, stateful_metrics=list(model.loss_names) + ["error"],
            unit_name="step",
        )
        if config.verbose:
            print(f"Epoch {epoch + 1}/{config.epochs}")
        progress.update(skip)
        tick = time.perf_counter()
        for batch in batches.epoch(epoch, skip):
            logs = {name: float(value) for name, value in train_fn(batch).items()}
            step.assign_add(1)
            current = int(step.numpy())
            # Throughput counts whole steps (input pipeline included) but not the first
            # step of this call, which traces and compiles the function.
            now = time.perf_counter()
            if current > 1 + first_epoch * steps_per_epoch + skip:
                timed_steps += 1
                timed_seconds += now - tick
            tick = now
            if not np.isfinite(logs["loss"]):
                # Nothing is saved now: the checkpoints on disk hold the last finite weights.
                raise FloatingPointError(
                    f"Training diverged at step {current}: loss is {logs['loss']}. The last good checkpoint "
                    f"is {manager.latest_checkpoint}; try a smaller --learning_rate."
                )
            progress.update(current - epoch * steps_per_epoch, list(logs.items()))
            if current % config.log_every == 0:
                with writer.as_default(step=current):
                    for name, value in logs.items():
                        tf.summary.scalar(name, value)
            if current % config.checkpoint_every == 0:
                manager.save(checkpoint_number=current)
        skip = 0
        manager.save(checkpoint_number=int(step.numpy()))
        if validation is not None and len(validation[0]):
            validation_error = metrics.classification_error(model, *validation)
            with validation_writer.as_default(step=int(step.numpy())):
                tf.summary.scalar("error", validation_error)
            if config.verbose:
                print(f"  validation error: {100 * validation_error:.2f} %")
    writer.flush()
    validation_writer.flush()

    examples = timed_steps * batches.examples_per_step
    summary = {
        "steps": int(step.numpy()),
        "epochs": config.epochs,
        "seconds": time.perf_counter() - start,
        "train_examples_per_second": examples / timed_seconds if timed_seconds > 0 else None,
        "final_losses": logs,
        "validation_error": validation_error,
    }
    with open(summary_path, "w") as f:
        json.dump(summary, f, indent=2)
    return summary
