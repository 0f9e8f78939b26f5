"""SavedModel export with named serving signatures, in TF Serving's numbered-version layout.

Signatures (inputs -> outputs, all named; each model's ``serving_functions`` lists its own):
  serving_default, classify: images -> probabilities [batch, K], class int64 [batch]
  encode:      images -> mean, scale [batch, latent_dim] (M2: also the predicted class)
  reconstruct: images -> reconstruction [batch, *input_shape]
  generate:    the model's generative inputs (M2: labels, latent; M1: latent) -> images
  ML-VAE: encode (style and content), encode_group (images, group_ids), reconstruct,
          generate (content, style); serving_default is encode.
  Faces:  encode (identity_probabilities, identity, light, light_angles, style, ...),
          relight (images, lights -> images, normals, albedo), generate (identities,
          lights, style), classify (serving_default), reconstruct; lights must be unit
          vectors with z >= 0, checked in the graph like every other input.
  Multi-digit: count (also serving_default): images [batch, H, W, 1] -> probabilities
          [batch, K + 1] of the counts 0..K, count int64 [batch]; decompose: images ->
          count_probabilities, presence [batch, K], where [batch, K, 3] (s, x, y), boxes
          [batch, K, 4] (y_min, x_min, y_max, x_max) in [0, 1], what [batch, K, what_dim],
          digits [batch, K, H, W, 1]; reconstruct (reconstruction, count); generate
          (counts in 0..K, z_where, z_what -> images, digits).  No classify: it would be
          count under other names.

Every signature checks its inputs inside the graph (so TF Serving checks them too) and
fails with an ``InvalidArgumentError`` naming the input, what it expected and what it
received: the shape (images ``[batch, height, width, channels]``, latents
``[batch, latent_dim]``, labels ``[batch]``), finite values, pixels in [0, 1], integer
inputs in their range (labels in ``[0, num_classes)``), and one batch size across a
signature's inputs.  The inputs are declared with an unknown shape: a declared shape lets
TensorFlow fold shape checks away (a rank-2 ``[4, 64]`` batch would reach an 8x8 model's
first reshape and be silently accepted).  The shapes each input expects are recorded in
``assets.extra/tfssvae.json`` under ``"inputs"`` (``serving_inputs`` reads them).

Every export also carries ``assets.extra/tf_serving_warmup_requests``: a TFRecord of
``tensorflow_serving.apis.PredictionLog`` records, one ``PredictRequest`` per signature
with a small batch of valid inputs (``warmup_inputs``), which TF Serving replays when it
loads the version, so the first user request does not pay for graph initialisation.  The
export runs each signature on its warm-up inputs before writing anything: a signature
that refuses them (an input whose validity the generic rule does not know) fails the
export instead of shipping a warm-up file that TF Serving would reject at load time.

The SavedModel is written to a temporary directory beside its destination, made readable
(0755) and renamed into place, so a crash never leaves a half-written version that TF
Serving would load; the version number is claimed by creating its directory, so two
exports into one ``export_base`` never take the same number.
"""
import inspect
import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from tfssvae import models

SIGNATURES = ("serving_default", "classify", "encode", "reconstruct", "generate")
WARMUP_FILE = "tf_serving_warmup_requests"  # the name TF Serving looks for under assets.extra
WARMUP_BATCH_SIZE = 2  # not 1, so a request also exercises the batch dimension


def next_version(export_base):
    """1 + the largest numbered version directory under ``export_base`` (1 if none)."""
    if not os.path.isdir(export_base):
        return 1
    versions = [int(name) for name in os.listdir(export_base) if name.isdigit()]
    return max(versions, default=0) + 1


def _described(shape):
    return "[" + ", ".join("batch" if d is None else str(d) for d in shape) + "]"


def _checked_input(value, spec, bound, after):
    """``value`` given its static shape ``spec.shape`` once in-graph asserts have checked it.

    ``bound`` is ``(low, high)``: inclusive for floats, ``[low, high)`` for integers
    (either may be None).  ``after`` is the previous check; each check runs after it, so
    the first failing one is reported.  Returns ``(value, last check)``.
    """
    name, shape = spec.name, list(spec.shape)
    described = _described(shape)
    with tf.control_dependencies(after):
        actual = tf.shape(value)

        def dimensions_match():
            ok = tf.constant(True)
            for i, d in enumerate(shape):
                if d is not None:
                    ok = tf.logical_and(ok, tf.equal(actual[i], d))
            return ok

        rank_ok = tf.equal(tf.size(actual), len(shape))
        shape_ok = tf.cond(rank_ok, dimensions_match, lambda: tf.constant(False))
        check = tf.debugging.Assert(
            shape_ok, [f"{name}: expected shape {described}, received shape", actual], summarize=8)
    with tf.control_dependencies([check]):
        value = tf.ensure_shape(value, shape)
        if value.dtype.is_floating:
            finite = tf.math.is_finite(value)
            check = tf.debugging.Assert(tf.reduce_all(finite), [
                f"{name}: expected finite values, received",
                tf.reduce_sum(tf.cast(tf.logical_not(finite), tf.int32)), "NaN or infinite values"])
    if bound is None:
        return value, [check]
    low, high = bound
    with tf.control_dependencies([check]):
        smallest, largest = tf.reduce_min(value), tf.reduce_max(value)
        ok = tf.constant(True)
        if low is not None:
            ok = tf.logical_and(ok, smallest >= tf.cast(low, value.dtype))
        if high is not None:
            ok = tf.logical_and(ok, largest <= tf.cast(high, value.dtype) if value.dtype.is_floating
                                else largest < tf.cast(high, value.dtype))
        if value.dtype.is_floating:
            expected = f"[{low}, {high}]" + (" (pixels in [0, 255] must be divided by 255)"
                                             if name == "images" else "")
        else:
            expected = f"[{0 if low is None else low}, {high})" if high is not None else f">= {low}"
        check = tf.debugging.Assert(ok, [f"{name}: expected values in {expected}, received values from",
                                         smallest, "to", largest])
    return value, [check]


def checked_function(function, specs, bounds):
    """``function`` behind in-graph checks of its inputs, and the TensorSpecs to declare for it.

    Args:
      function: takes one tensor per spec, positionally.
      specs: ``tf.TensorSpec`` per argument, named, with the shape it expects (batch None).
      bounds: ``{input name: (low, high)}`` value ranges (see ``_checked_input``).

    Returns:
      ``(checked, declared)``: a function whose arguments are named as the specs, and
      the same specs with an unknown shape (the checks, not the declaration, hold the shape).
    """
    specs = list(specs)

    def checked(*args):
        inputs, after = [], []
        for value, spec in zip(args, specs):
            value, after = _checked_input(value, spec, bounds.get(spec.name), after)
            inputs.append(value)
        batched = [(spec.name, value) for spec, value in zip(specs, inputs) if len(spec.shape) and
                   spec.shape[0] is None]
        for (first, a), (other, b) in zip(batched, batched[1:]):
            with tf.control_dependencies(after):
                sizes = [tf.shape(a)[0], tf.shape(b)[0]]
                after = [tf.debugging.Assert(tf.equal(*sizes), [
                    f"{first} and {other}: expected the same batch size, received", sizes[0], "and", sizes[1]])]
        with tf.control_dependencies(after):
            inputs = [tf.identity(value) for value in inputs]
        return function(*inputs)

    checked.__signature__ = inspect.Signature(
        [inspect.Parameter(spec.name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for spec in specs])
    checked.__name__ = getattr(function, "__name__", "serving_function")
    declared = [tf.TensorSpec(None, spec.dtype, name=spec.name) for spec in specs]
    return checked, declared


class _ServingModule(tf.Module):
    """Holds the model (so its variables are saved) and one tf.function per signature,
    each checking its inputs inside the graph."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.functions = {}
        self.inputs = {}
        bounds = model.serving_bounds()
        for name, (function, signature) in model.serving_functions().items():
            checked, declared = checked_function(function, signature, bounds)
            self.functions[name] = tf.function(checked, input_signature=declared)
            self.inputs[name] = {spec.name: {"shape": list(spec.shape), "dtype": spec.dtype.name,
                                             **({"range": list(bounds[spec.name])} if spec.name in bounds else {})}
                                 for spec in signature}


def serving_inputs(saved_model_dir):
    """``{signature: {input: {"shape": [None, ...], "dtype": ...}}}`` of a tfssvae SavedModel,
    from its ``assets.extra/tfssvae.json`` (the signatures declare unknown shapes).

    Raises a ValueError when ``saved_model_dir`` holds no SavedModel or no such record.
    """
    if not os.path.isfile(os.path.join(str(saved_model_dir), "saved_model.pb")):
        raise ValueError(f"saved_model: {saved_model_dir} holds no SavedModel (no saved_model.pb); expected a "
                         f"version directory such as saved_models/m2/1")
    record = os.path.join(saved_model_dir, "assets.extra", "tfssvae.json")
    if not os.path.isfile(record):
        raise ValueError(f"saved_model: {saved_model_dir} has no assets.extra/tfssvae.json; was it exported by tfssvae?")
    with open(record) as f:
        inputs = json.load(f).get("inputs")
    if inputs is None:
        raise ValueError(f"saved_model: {record} records no input shapes; export the model again")
    return inputs


def _unit_lights(rng, batch_size):
    """Unit vectors on the upper hemisphere (z > 0, toward the camera): the faces model's lights."""
    lights = rng.normal(size=(batch_size, 3))
    lights[:, 2] = np.abs(lights[:, 2]) + 0.5  # well above the horizon, whatever the draw
    return lights / np.linalg.norm(lights, axis=1, keepdims=True)


# Inputs whose valid values are not a range (so ``serving_bounds`` cannot say them), by name.
_SPECIAL_INPUTS = {"lights": _unit_lights}


def warmup_inputs(inputs, batch_size=WARMUP_BATCH_SIZE, seed=0):
    """Valid values for one signature's inputs: ``{input name: np.ndarray}``.

    Args:
      inputs: the signature's record in ``serving_inputs``: ``{name: {"shape": [None, ...],
        "dtype": ..., "range": [low, high]}}`` (range optional; see ``serving_bounds``).
      batch_size: the size given to the batch dimension (the leading ``None``).
      seed: float values are drawn from ``np.random.default_rng(seed)``.

    Floats in a closed range are uniform in it (images in [0, 1]); floats without a range
    are standard Normal draws (latent, style and content codes are a priori N(0, 1));
    ``lights`` are unit vectors toward the camera.  Integers in ``[low, high)`` count up
    from ``low`` modulo the range (labels 0, 1, ...); integers with no upper bound are all
    ``low`` (group ids: one group holding the whole batch, the case ``encode_group`` is for).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, received {batch_size!r}")
    rng = np.random.default_rng(seed)
    values = {}
    for name, spec in inputs.items():
        shape = list(spec["shape"])
        if not shape or shape[0] is not None or any(d is None for d in shape[1:]):
            raise ValueError(f"inputs: expected {name!r} to have shape [batch, known sizes...], received "
                             f"{_described(shape)}")
        shape = [batch_size] + shape[1:]
        dtype = np.dtype(tf.as_dtype(spec["dtype"]).as_numpy_dtype)
        low, high = spec.get("range", (None, None))
        if name in _SPECIAL_INPUTS:
            value = _SPECIAL_INPUTS[name](rng, batch_size)
        elif dtype.kind == "f":
            if low is not None and high is not None:
                value = rng.uniform(low, high, size=shape)
            else:
                # A standard Normal, shifted to respect a one-sided bound.
                value = rng.normal(size=shape)
                if low is not None:
                    value = low + np.abs(value)
                elif high is not None:
                    value = high - np.abs(value)
        elif dtype.kind in "iu":
            start = 0 if low is None else int(low)
            if high is None:
                value = np.full(shape, start)
            else:
                value = start + np.arange(int(np.prod(shape))).reshape(shape) % (int(high) - start)
        else:
            raise ValueError(f"inputs: no warm-up value for {name!r} of dtype {spec['dtype']}")
        values[name] = np.asarray(value).astype(dtype)
    return values


def _warmup_records(module, model_name):
    """One serialized ``PredictionLog`` per signature of ``module`` (a ``_ServingModule``),
    each request's inputs checked first by running the signature on them."""
    records = []
    for signature, function in module.functions.items():
        values = warmup_inputs(module.inputs[signature])
        try:
            function(**values)
        except tf.errors.InvalidArgumentError as error:
            # The in-graph check's own words ("lights: expected unit vectors ..."), not the
            # "Graph execution error" header and node trace that come before them.
            lines = [line.strip() for line in str(error.message).splitlines() if line.strip()]
            message = next((line for line in lines if line.startswith("assertion failed")), lines[-1] if lines
                           else type(error).__name__)[:500]
            raise ValueError(
                f"warm-up request for signature {signature!r}: the signature refuses the inputs warmup_inputs "
                f"made ({message}); give the input a rule in export._SPECIAL_INPUTS or a range in the model's "
                f"serving_bounds") from error
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model_name,
                                                                             signature_name=signature))
        for name, value in values.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        records.append(log.SerializeToString())
    return records


def _claim_version(export_base, version):
    """Creates ``export_base/.claim-<version>`` (atomic: fails if it exists) so that no
    concurrent export takes the same number; returns its path, or None if taken."""
    claim = os.path.join(export_base, f".claim-{version}")
    try:
        os.mkdir(claim)
    except FileExistsError:
        return None
    if os.path.exists(os.path.join(export_base, str(version))):
        os.rmdir(claim)
        return None
    return claim


def export(model, export_base, version=None, metadata=None):
    """Writes ``model`` as a SavedModel to ``export_base/<version>`` and returns that path.

    Args:
      model: a built ``tfssvae.models.GenerativeModel``.
      export_base: directory of numbered versions, e.g. ``saved_models/m2``.
      version: the version number; by default the next one after those present.
      metadata: optional JSON-serialisable dict stored as ``assets.extra/tfssvae.json``
        together with the model's config.
    """
    if version is not None and (isinstance(version, bool) or not str(version).isdigit() or int(version) < 1):
        raise ValueError(f"version: expected a positive integer, received {version!r}")
    check_writable(export_base, "export_base")
    os.makedirs(export_base, exist_ok=True)
    if version is None:
        # The next free number, claimed atomically (a concurrent export takes the one after).
        version = next_version(export_base)
        while (claim := _claim_version(export_base, version)) is None:
            version += 1
    else:
        version = int(version)
        claim = _claim_version(export_base, version)
        if claim is None:
            raise ValueError(f"version: {os.path.join(export_base, str(version))} already exists; choose another "
                             f"version or export_base")
    destination = os.path.join(export_base, str(version))
    staging = None
    try:
        staging = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_base)
        module = _ServingModule(model)
        signatures = {name: function.get_concrete_function() for name, function in module.functions.items()}
        # Before anything is written: a signature that refuses its warm-up inputs fails here.
        # TF Serving names a model in its config; the export base's name is what the README's
        # models.config uses (saved_models/m2 -> "m2").
        warmup = _warmup_records(module, os.path.basename(os.path.normpath(export_base)))
        tf.saved_model.save(module, staging, signatures=signatures)
        extra = os.path.join(staging, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        with open(os.path.join(extra, "tfssvae.json"), "w") as f:
            json.dump({"model": type(model).__name__, "config": model.get_config(), "inputs": module.inputs,
                       **(metadata or {})}, f, indent=2, default=str)
        with tf.io.TFRecordWriter(os.path.join(extra, WARMUP_FILE)) as writer:
            for record in warmup:
                writer.write(record)
        # mkdtemp makes 0700: a model server running as another user could not read it.
        for root, directories, files in os.walk(staging):
            os.chmod(root, 0o755)
            for file_name in files:
                os.chmod(os.path.join(root, file_name), 0o644)
        os.rename(staging, destination)  # the claim guarantees nobody else writes this number
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        os.rmdir(claim)
    return destination


def check_writable(directory, name):
    """ValueError naming ``name`` when ``directory`` (or, if it does not exist yet, its nearest
    existing parent) cannot be written; called before training so a run does not end unexported."""
    existing = os.path.abspath(directory)
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        raise ValueError(f"{name}: {existing} is not a directory, so {directory} cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{name}: {existing} is not writable, so nothing can be written to {directory}")


def restore_run(model_dir):
    """Rebuilds the model of a training run from its ``model.json`` and restores the weights it
    ended with (those of the best validation error when it kept them, else the latest
    checkpoint); returns ``(model name, model)``."""
    description = os.path.join(model_dir, "model.json")
    if not os.path.exists(description):
        raise ValueError(f"model_dir: {model_dir} has no model.json; is it a tfssvae training directory?")
    with open(description) as f:
        run = json.load(f)
    model = models.model_class(run["model"])(**run["config"])
    model.build_variables()
    # M1+M2 keeps its final checkpoints under m2/ (the M1 stage's are under m1/).
    damaged = []
    for directory in (os.path.join(model_dir, "m2", "best"), os.path.join(model_dir, "best"),
                      os.path.join(model_dir, "m2", "checkpoints"), os.path.join(model_dir, "checkpoints")):
        state = tf.train.get_checkpoint_state(directory)
        for path in reversed(list(state.all_model_checkpoint_paths) if state else []):
            try:
                tf.train.Checkpoint(model=model).restore(path).expect_partial().assert_existing_objects_matched()
            except (tf.errors.OpError, ValueError, AssertionError, IndexError, OSError) as error:
                # A damaged checkpoint (cut short): say so and try the one before it.
                logging.warning("Checkpoint %s cannot be restored (%s); trying the one before it.", path,
                                str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__)
                damaged.append(path)
                continue
            return run["model"], model
    if damaged:
        raise ValueError(f"model_dir: no checkpoint in {model_dir} can be restored (damaged: {', '.join(damaged)})")
    raise ValueError(f"model_dir: no checkpoint found in {model_dir}")


def export_run(model_dir, export_dir="saved_models"):
    """Exports the latest checkpoint of a training run to ``export_dir/<model>/<next version>``."""
    name, model = restore_run(model_dir)
    return export(model, os.path.join(export_dir, name))
