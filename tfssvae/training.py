"""The one training loop: tf.function steps, checkpoints with resume, TensorBoard, progress.

``train`` runs ``model.train_step`` (the same step ``model.fit`` uses) inside
``tf.function`` (optionally XLA-compiled) over the batches of a batch source.  A checkpoint
of the model, the optimizer and the global step is written every
``checkpoint_every`` steps and at the end of every epoch; calling ``train`` again with
the same ``model_dir`` restores it and continues with exactly the batches that were
still to come (each epoch's order is a function of the seed and the epoch number).

Distribution: ``train`` runs under whatever ``tf.distribute`` strategy is in scope
(``make_strategy`` builds one by name; the model must be built inside its scope).  Under
the default strategy it runs ``model.train_step`` exactly as without distribution.  With
several replicas every global batch is cut into one strided share a replica (grouped
batches by whole groups), each worker's input pipeline keeps only its replicas' shares,
each replica's loss is divided by the number of replicas so that the summed gradients are
the gradient of the global batch's loss, and only the chief writes summaries and its
checkpoints where they belong (the other workers save to a temporary directory they remove,
as ``tf.distribute`` needs every worker to take part in a save).
"""
import dataclasses
import glob
import json
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfssvae import fused, metrics


PRECISIONS = ("float32", "bfloat16")
#: Values of the ``strategy`` run field (``make_strategy``).
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def check_tf_config(text):
    """Parses and checks a ``TF_CONFIG`` value as TensorFlow documents it; returns the dict.

    Expected: ``{"cluster": {"worker": ["host:port", ...], "chief": [...] (optional)},
    "task": {"type": "worker" or "chief", "index": i}}`` with ``i`` an index into the task
    type's list.  ValueError naming what is wrong otherwise (an unset variable included).
    """
    example = ('TF_CONFIG=\'{"cluster": {"worker": ["localhost:12345", "localhost:23456"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    if not text:
        raise ValueError(f"strategy: multi_worker reads the cluster from the TF_CONFIG environment variable, "
                         f"which is not set; set it on every worker, e.g. {example}")
    try:
        spec = json.loads(text)
    except ValueError as error:
        raise ValueError(f"strategy: TF_CONFIG is not valid JSON ({error}); expected e.g. {example}") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not cluster.get("worker") and not cluster.get("chief"):
        raise ValueError(f"strategy: TF_CONFIG has no cluster with a 'worker' list of host:port addresses; "
                         f"received {text!r}; expected e.g. {example}")
    for role, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(isinstance(a, str) and ":" in a for a in addresses):
            raise ValueError(f"strategy: TF_CONFIG cluster.{role}: expected a list of 'host:port' strings, "
                             f"received {addresses!r}")
    task = spec.get("task")
    if not isinstance(task, dict) or task.get("type") not in ("worker", "chief"):
        raise ValueError(f"strategy: TF_CONFIG task: expected {{'type': 'worker' or 'chief', 'index': i}}, "
                         f"received {task!r}")
    role, index = task["type"], task.get("index", 0)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster.get(role) or []):
        raise ValueError(f"strategy: TF_CONFIG task.index: expected an index into cluster.{role} "
                         f"({len(cluster.get(role) or [])} entries), received {index!r}")
    return spec


def make_strategy(name):
    """The ``tf.distribute`` strategy called ``name`` (one of ``STRATEGIES``).

    * ``default``: no distribution (``tf.distribute.get_strategy()``, one device).
    * ``mirrored``: ``MirroredStrategy`` over this machine's GPUs, or over its logical CPU
      devices when it has none (one CPU unless ``tf.config.set_logical_device_configuration``
      split it, as the tests do).
    * ``multi_worker``: ``MultiWorkerMirroredStrategy``, the cluster and this process's
      task read from ``TF_CONFIG`` (checked first by ``check_tf_config``).  Create it before
      any other TensorFlow operation runs in the process (TensorFlow's own requirement).
    * ``tpu``: ``TPUStrategy``; a ValueError where no TPU can be found.

    ValueError for any other name.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {list(STRATEGIES)}, received {name!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "multi_worker":
        check_tf_config(os.environ.get("TF_CONFIG"))
        return tf.distribute.MultiWorkerMirroredStrategy()
    # No TPU named, none attached (TPU VMs expose /dev/accel*), none visible: say so at once
    # rather than let the resolver look for one on the network.
    if not (os.environ.get("TPU_NAME") or glob.glob("/dev/accel*") or tf.config.list_logical_devices("TPU")):
        raise ValueError("strategy: tpu needs a TPU, and none is found here (no TPU_NAME, no /dev/accel*, no "
                         "TPU device); use default, mirrored or multi_worker")
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ValueError(f"strategy: tpu needs a TPU, and none is found here ({reason}); use default, mirrored "
                         f"or multi_worker") from None
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy=None):
    """Whether this process writes summaries, checkpoints, metrics and exports: always, but
    under a multi-worker strategy only the ``chief`` task (or worker 0 where the cluster has
    no chief)."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    if resolver.task_type in (None, "chief"):
        return True
    return resolver.task_type == "worker" and (resolver.task_id or 0) == 0 \
        and "chief" not in resolver.cluster_spec().as_dict()


def _check_shares(batches, num_replicas):
    """ValueError unless every global batch of ``batches`` splits evenly over ``num_replicas``:
    whole groups for grouped batches (``groups_per_batch``), examples otherwise."""
    groups = getattr(batches, "groups_per_batch", None)
    if groups is not None:
        size = getattr(batches, "group_size", "?")
        if groups < num_replicas:
            raise ValueError(
                f"group_size: a group of {size} examples is larger than a replica's share of the batch "
                f"({groups} groups of {size} over {num_replicas} replicas); groups are never split across "
                f"replicas, so set groups_per_batch to a multiple of {num_replicas}")
        if groups % num_replicas:
            raise ValueError(f"groups_per_batch: the global batch of {groups} groups does not split into whole "
                             f"groups over {num_replicas} replicas; expected a multiple of {num_replicas}")
        return
    examples = batches.examples_per_step
    if int(examples) != examples or int(examples) % num_replicas:
        raise ValueError(f"batch_size: the global batch of {examples} examples does not split evenly over "
                         f"{num_replicas} replicas; expected a multiple of {num_replicas}")


def replica_share(batch, replica, num_replicas, groups_per_batch=None):
    """Replica ``replica``'s share of a global batch dict (``_check_shares`` passed).

    Rows ``replica, replica + num_replicas, ...`` (every ``num_replicas``-th row): the
    semi-supervised batches list their labelled rows last, and a strided share gives every
    replica its part of them, so per-replica terms such as the labelled cross-entropy
    average to the global batch's; for grouped batches (``groups_per_batch`` given) the
    rows of groups ``[replica * g, (replica + 1) * g)`` with ``g = groups_per_batch /
    num_replicas``, renumbered from 0, so a group is never split (grouped batches list
    their rows shuffled, and group sizes may vary).

    Args:
      batch: dict of ``[batch, ...]`` tensors (``"group"`` int ``[batch]`` when grouped).
      replica: int32 scalar tensor, the replica's index over all workers.
    """
    if groups_per_batch is None:
        return {key: value[replica::num_replicas] for key, value in batch.items()}
    per_replica = groups_per_batch // num_replicas
    group = tf.cast(batch["group"], tf.int32)
    mine = tf.equal(group // per_replica, replica)
    share = {key: tf.boolean_mask(value, mine) for key, value in batch.items()}
    share["group"] = tf.cast(tf.boolean_mask(group, mine) - replica * per_replica, batch["group"].dtype)
    return share


def _distributed_epoch(strategy, batches, epoch, skip):
    """This epoch's batches as a distributed dataset: each worker builds the same global batches
    (same seed, same label split) and keeps its replicas' shares, one element a replica."""
    groups = getattr(batches, "groups_per_batch", None)

    def worker_dataset(context):
        local = context.num_replicas_in_sync // context.num_input_pipelines
        first = context.input_pipeline_id * local  # this worker's first replica over all workers
        dataset = batches.epoch(epoch, skip)
        if not isinstance(dataset, tf.data.Dataset):
            raise TypeError(f"batches.epoch must return a tf.data.Dataset, received {type(dataset).__name__}")

        def shares(batch):
            # Consecutive elements go to the worker's replicas in turn (round-robin, in order).
            return tf.data.Dataset.range(local).map(lambda r: replica_share(
                batch, first + tf.cast(r, tf.int32), context.num_replicas_in_sync, groups))

        return dataset.flat_map(shares)

    return strategy.distribute_datasets_from_function(worker_dataset)


#: How the step size moves over a run (``TrainConfig.learning_rate_decay``).
LEARNING_RATE_DECAYS = ("constant", "cosine", "staircase")


@dataclasses.dataclass
class TrainConfig:
    """Settings of the training loop itself (batch composition belongs to the batch source).

    ``steps_per_call`` training steps run inside one ``tf.function`` call (like Keras'
    ``steps_per_execution``): the host sees the losses, updates the progress bar and
    checks for divergence once a call.  ``learning_rate_decay`` is ``"constant"`` (Adam at
    ``learning_rate`` throughout) or ``"cosine"`` (from ``learning_rate`` down to 0 along a
    half cosine over the ``epochs`` of the run; a resumed run with more epochs stretches the
    curve from the step it resumes at) or ``"staircase"`` (multiplied by
    ``learning_rate_decay_factor`` every ``learning_rate_decay_every`` steps, as the official
    CascadeVAE code's Adam is).  ``keep_best`` keeps the weights of the epoch with
    the lowest validation error (the later one on a tie), when validation data are given,
    and restores them at the end.  ``time_limit_minutes`` (None: none) stops training after
    the first call that ends past it, with a checkpoint.  ``keep_checkpoints`` newest
    checkpoints are kept (0: all, e.g. for a learning curve).  ``ema_decay`` (0: off) keeps
    an exponential moving average of the trainable weights (``WeightAverage``), updated
    after every step; validation, the best checkpoint and the weights the run ends with
    (hence the export) use the average, and the checkpoints keep both, so a resumed run
    continues the same average.
    """

    epochs: int = 10
    learning_rate: float = 3e-4
    learning_rate_decay: str = "constant"
    learning_rate_decay_every: int = None
    learning_rate_decay_factor: float = None
    jit_compile: bool = False
    checkpoint_every: int = 1000
    log_every: int = 50
    steps_per_call: int = 1
    keep_best: bool = True
    verbose: int = 1
    time_limit_minutes: float = None
    keep_checkpoints: int = 2
    ema_decay: float = 0.0

    def __post_init__(self):
        for name in ("epochs", "checkpoint_every", "log_every", "steps_per_call"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or int(value) < 1:
                raise ValueError(f"{name}: expected a positive integer, received {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate: expected a positive number, received {self.learning_rate}")
        if self.learning_rate_decay not in LEARNING_RATE_DECAYS:
            raise ValueError(f"learning_rate_decay: expected one of {LEARNING_RATE_DECAYS}, "
                             f"received {self.learning_rate_decay!r}")
        if self.learning_rate_decay == "staircase":
            every, factor = self.learning_rate_decay_every, self.learning_rate_decay_factor
            if isinstance(every, bool) or not isinstance(every, int) or every < 1:
                raise ValueError(f"learning_rate_decay_every: the staircase needs a positive number of steps, "
                                 f"received {every!r}")
            if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor <= 1:
                raise ValueError(f"learning_rate_decay_factor: the staircase needs a factor in (0, 1], "
                                 f"received {factor!r}")
        if self.time_limit_minutes is not None and not self.time_limit_minutes > 0:
            raise ValueError(f"time_limit_minutes: expected a positive number of minutes or None, "
                             f"received {self.time_limit_minutes}")
        if isinstance(self.keep_checkpoints, bool) or int(self.keep_checkpoints) != self.keep_checkpoints \
                or self.keep_checkpoints < 0:
            raise ValueError(f"keep_checkpoints: expected an integer >= 0, received {self.keep_checkpoints!r}")
        if isinstance(self.ema_decay, bool) or not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay: expected a number in [0, 1) (0: no weight average), "
                             f"received {self.ema_decay!r}")


class WeightAverage:
    """An exponential moving average of ``variables`` (a list of ``tf.Variable``).

    ``update()`` (inside a ``tf.function`` or eagerly) moves each average towards its
    variable by ``1 - d``, where the decay ``d = min(decay, (1 + n) / (10 + n))`` after ``n``
    updates, as ``tf.train.ExponentialMovingAverage`` does with ``num_updates``: early on
    the average follows the weights instead of remembering their random initial values.
    ``swap()`` exchanges the weights and their averages in place (twice restores them).
    """

    def __init__(self, variables, decay):
        self.variables = list(variables)
        self.decay = float(decay)
        # tf.convert_to_tensor reads Keras 3 and TF variables alike.
        self.averages = [tf.Variable(tf.convert_to_tensor(v), trainable=False) for v in self.variables]
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="average_updates")

    def update(self):
        n = tf.cast(self.updates, tf.float32)
        decay = tf.minimum(self.decay, (1.0 + n) / (10.0 + n))
        for average, variable in zip(self.averages, self.variables):
            average.assign_sub((1.0 - tf.cast(decay, average.dtype)) * (average - variable))
        self.updates.assign_add(1)

    def swap(self):
        for average, variable in zip(self.averages, self.variables):
            weights = tf.identity(tf.convert_to_tensor(variable))
            variable.assign(average)
            average.assign(weights)


def learning_rate_schedule(config, steps_per_epoch):
    """Adam's step size for a ``TrainConfig``: the number, or a Keras schedule of the
    optimizer's step count (so a resumed run continues the curve where it stopped)."""
    if config.learning_rate_decay == "constant":
        return config.learning_rate
    if config.learning_rate_decay == "staircase":
        return keras.optimizers.schedules.ExponentialDecay(
            config.learning_rate, decay_steps=config.learning_rate_decay_every,
            decay_rate=config.learning_rate_decay_factor, staircase=True)
    return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=config.epochs * steps_per_epoch)


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


def _replica_step(model, jit_compile=False):
    """``model.train_step`` for one replica's share of a global batch (the model's
    ``compute_gradients`` scales the loss by the replicas), with ``jit_compile`` compiling the
    gradients only: the optimizer's cross-replica sum cannot sit inside a compiled function."""
    from tfssvae.models.base import GenerativeModel

    if type(model).train_step is not GenerativeModel.train_step:
        raise ValueError(f"strategy: {type(model).__name__} has its own train_step, which the distributed "
                         f"loop cannot scale per replica; train it with strategy='default'")
    if not jit_compile:
        return model.train_step
    gradients = tf.function(model.compute_gradients, jit_compile=True, reduce_retracing=True)

    def step(batch):
        grads, losses, probabilities = gradients(batch)
        model.optimizer.apply(grads, model.trainable_variables)
        model._update_trackers(losses, probabilities, batch)

    return step


def _multi_step(model, jit_compile, strategy=None, after_step=None):
    """A ``tf.function`` running ``num_steps`` training steps over an iterator; returns the last logs.

    ``after_step`` (None: nothing) runs after every step, in the same graph (the weight
    average's update).

    With ``jit_compile`` the step itself is XLA-compiled; the loop around it, which reads
    the iterator, stays an ordinary graph (XLA cannot compile iterator ops).  Under a
    ``tf.distribute`` strategy (``strategy``; None: none) each step runs ``_replica_step`` on every
    replica, and the logs are read in cross-replica context, where the trackers' variables
    (summed on read) give the means over the global batch.
    """
    if strategy is None:
        # reduce_retracing: grouped batches with variable group sizes change the batch length.
        train_step = tf.function(model.train_step, jit_compile=True, reduce_retracing=True) if jit_compile \
            else model.train_step
    else:
        replica_step = _replica_step(model, jit_compile)

        def train_step(batch):
            strategy.run(replica_step, args=(batch,))
            return {tracker.name: tracker.result() for tracker in model.metrics}

    def step(batch):
        logs = train_step(batch)
        if after_step is not None:
            after_step()
        return logs

    def steps(iterator, num_steps):
        logs = step(next(iterator))
        for _ in tf.range(num_steps - 1):
            logs = step(next(iterator))
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

    Runs under the ``tf.distribute`` strategy in scope, if any (build the model and call
    ``train`` inside ``strategy.scope()``): a ValueError when a global batch does not split
    evenly over its replicas, or a group would be split (see the module docstring).

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
    # The strategy in scope (experiment.run enters it); the default one means no distribution
    # and leaves the loop exactly as it is without tf.distribute.
    strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
    if strategy is not None:
        _check_shares(batches, strategy.num_replicas_in_sync)
    chief = is_chief(strategy)
    os.makedirs(model_dir, exist_ok=True)
    if getattr(model, "optimizer", None) is None:
        model.compile(optimizer=fused.Adam(learning_rate_schedule(config, batches.steps_per_epoch)))
    model.build_variables()

    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    # The best validation error so far and its epoch travel in the checkpoint, so a
    # resumed run keeps comparing against the same best.
    best_error = tf.Variable(np.inf, dtype=tf.float64, trainable=False, name="best_validation_error")
    best_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_epoch")
    # The average is made after the model's variables exist, under the same strategy scope.
    average = WeightAverage(model.trainable_variables, config.ema_decay) if config.ema_decay else None
    averaged = {"averages": average.averages, "average_updates": average.updates} if average else {}
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, step=step,
                                     best_error=best_error, best_epoch=best_epoch, **averaged)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(model_dir, "checkpoints"),
                                         max_to_keep=config.keep_checkpoints or None)
    best = tf.train.Checkpoint(model=model)
    best_manager = tf.train.CheckpointManager(best, os.path.join(model_dir, "best"), max_to_keep=1)
    # Every worker restores from the chief's checkpoints (model_dir must be on a file system
    # they all see for a resume); a non-chief worker saves when the chief does (a save may
    # read variables across workers) but into a scratch directory removed at the end.
    scratch = None if chief else os.path.join(model_dir, f".worker{strategy.cluster_resolver.task_id}_scratch")
    save_manager, best_save_manager = manager, best_manager
    if scratch:
        save_manager = tf.train.CheckpointManager(checkpoint, os.path.join(scratch, "checkpoints"), max_to_keep=1)
        best_save_manager = tf.train.CheckpointManager(best, os.path.join(scratch, "best"), max_to_keep=1)
    resumed = restore_latest_intact(checkpoint, manager)
    if resumed and config.verbose:
        print(f"Resuming from {resumed} at step {int(step.numpy())}.")

    steps_per_epoch = batches.steps_per_epoch
    total_steps = config.epochs * steps_per_epoch
    summary_path = os.path.join(model_dir, "train_summary.json")
    keep_best = config.keep_best and validation is not None and len(validation[0]) > 0

    def finish():
        # A non-chief worker's own best (the same epoch as the chief's: the same weights and
        # validation data); the chief's when this call trained nothing.
        latest_best = best_save_manager.latest_checkpoint or best_manager.latest_checkpoint
        if keep_best and latest_best:
            best.restore(latest_best).assert_existing_objects_matched()  # the best average, if averaging
        elif average:
            average.swap()  # the run ends with the averaged weights
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)

    if int(step.numpy()) >= total_steps and os.path.exists(summary_path):
        if config.verbose:
            print(f"Training already finished ({total_steps} steps) in {model_dir}.")
        finish()
        with open(summary_path) as f:
            return json.load(f)

    train_fn = _multi_step(model, config.jit_compile, strategy, average.update if average else None)
    if chief:
        writer = tf.summary.create_file_writer(os.path.join(model_dir, "tensorboard", "train"))
        validation_writer = tf.summary.create_file_writer(os.path.join(model_dir, "tensorboard", "validation"))
    else:
        writer = validation_writer = tf.summary.create_noop_writer()
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
        if strategy is None:
            dataset = batches.epoch(epoch, skip)
            if not isinstance(dataset, tf.data.Dataset):
                raise TypeError(f"batches.epoch must return a tf.data.Dataset, received {type(dataset).__name__}")
        else:
            dataset = _distributed_epoch(strategy, batches, epoch, skip)
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
                save_manager.save(checkpoint_number=current)
            if now > deadline:
                out_of_time = True
                break
        if out_of_time:
            save_manager.save(checkpoint_number=int(step.numpy()))
            if config.verbose:
                print(f"\nStopped at step {int(step.numpy())} of {total_steps}: the time limit of "
                      f"{config.time_limit_minutes} minutes is reached.")
            break
        skip = 0
        if validation is not None and len(validation[0]):
            if average:
                average.swap()  # validate (and keep as best) the average; swapped back below
            validation_error = metrics.classification_error(model, *validation)
            with validation_writer.as_default(step=int(step.numpy())):
                tf.summary.scalar("error", validation_error)
            # A tie goes to the later epoch: on a small validation split (134 images for the
            # digits) errors move in coarse steps, and equal error with more training is the
            # better bet (digits, 100 epochs: test 7.78 % at the tied last epoch, 8.22 % at the first).
            if keep_best and validation_error <= best_error.numpy():
                best_error.assign(validation_error)
                best_epoch.assign(epoch)
                best_save_manager.save(checkpoint_number=int(step.numpy()))
            if config.verbose:
                so_far = f" (best {100 * best_error.numpy():.2f} % at epoch {int(best_epoch.numpy()) + 1})"
                print(f"  validation error: {100 * validation_error:.2f} %{so_far if keep_best else ''}")
            if average:
                average.swap()
        save_manager.save(checkpoint_number=int(step.numpy()))
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
    if chief:
        with open(summary_path, "w") as f:
            json.dump(summary, f, indent=2)
    return summary
