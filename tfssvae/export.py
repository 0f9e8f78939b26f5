"""SavedModel export with named serving signatures, in TF Serving's numbered-version layout.

Signatures (inputs -> outputs, all named; each model's ``serving_functions`` lists its own):
  serving_default, classify: images -> probabilities [batch, K], class int64 [batch]
  encode:      images -> mean, scale [batch, latent_dim] (M2: also the predicted class)
  reconstruct: images -> reconstruction [batch, *input_shape]
  generate:    the model's generative inputs (M2: labels, latent; M1: latent) -> images
  ML-VAE: encode (style and content), encode_group (images, group_ids), reconstruct,
          generate (content, style); serving_default is encode.

The SavedModel is written to a temporary directory beside its destination and renamed
into place, so a crash never leaves a half-written version that TF Serving would load.
"""
import json
import os
import shutil
import tempfile

import tensorflow as tf

from tfssvae import models

SIGNATURES = ("serving_default", "classify", "encode", "reconstruct", "generate")


def next_version(export_base):
    """1 + the largest numbered version directory under ``export_base`` (1 if none)."""
    if not os.path.isdir(export_base):
        return 1
    versions = [int(name) for name in os.listdir(export_base) if name.isdigit()]
    return max(versions, default=0) + 1


class _ServingModule(tf.Module):
    """Holds the model (so its variables are saved) and one tf.function per signature."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.functions = {}
        for name, (function, signature) in model.serving_functions().items():
            self.functions[name] = tf.function(function, input_signature=signature)


def export(model, export_base, version=None, metadata=None):
    """Writes ``model`` as a SavedModel to ``export_base/<version>`` and returns that path.

    Args:
      model: a built ``tfssvae.models.GenerativeModel``.
      export_base: directory of numbered versions, e.g. ``saved_models/m2``.
      version: the version number; by default the next one after those present.
      metadata: optional JSON-serialisable dict stored as ``assets.extra/tfssvae.json``
        together with the model's config.
    """
    if version is None:
        version = next_version(export_base)
    if int(version) < 1:
        raise ValueError(f"version: expected a positive integer, received {version}")
    destination = os.path.join(export_base, str(int(version)))
    if os.path.exists(destination):
        raise ValueError(f"version: {destination} already exists; choose another version or export_base")
    os.makedirs(export_base, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_base)
    try:
        module = _ServingModule(model)
        signatures = {name: function.get_concrete_function() for name, function in module.functions.items()}
        tf.saved_model.save(module, staging, signatures=signatures)
        extra = os.path.join(staging, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        with open(os.path.join(extra, "tfssvae.json"), "w") as f:
            json.dump({"model": type(model).__name__, "config": model.get_config(), **(metadata or {})},
                      f, indent=2, default=str)
        os.rename(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination


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
    for directory in (os.path.join(model_dir, "m2", "best"), os.path.join(model_dir, "best"),
                      os.path.join(model_dir, "m2", "checkpoints"), os.path.join(model_dir, "checkpoints")):
        latest = tf.train.latest_checkpoint(directory)
        if latest:
            tf.train.Checkpoint(model=model).restore(latest).expect_partial().assert_existing_objects_matched()
            return run["model"], model
    raise ValueError(f"model_dir: no checkpoint found in {model_dir}")


def export_run(model_dir, export_dir="saved_models"):
    """Exports the latest checkpoint of a training run to ``export_dir/<model>/<next version>``."""
    name, model = restore_run(model_dir)
    return export(model, os.path.join(export_dir, name))
