"""A whole run: load data, split labels, build the model, train, evaluate, export.

A run is described by an ``ml_collections.ConfigDict`` from ``tfssvae/configs/``
(``configs.get("m2")``, or the training binary's ``--config``): shared run fields, the
model family's own run options, and ``config.model``, the model's registry ``name`` and
its constructor arguments.  ``validate`` checks a config; ``run`` runs it.  Everything a
run produces lands in its model directory (checkpoints, TensorBoard events,
``model.json``, ``metrics.json``) and, unless disabled, as a numbered SavedModel version
under ``export_dir/<model>/``.
"""
import contextlib
import dataclasses
import inspect
import json
import numbers
import os
import re

import keras
import numpy as np
import tensorflow as tf

from tfssvae import data as data_lib
from tfssvae import export as export_lib
from tfssvae.data import faces, sprites
from tfssvae.data import multi_digit as multi_digit_data
from tfssvae import configs, evaluation, faces_figures, metrics, models, training
from tfssvae.models import cascade_vae
from tfssvae.models import faces as faces_model
from tfssvae.models import multi_digit as multi_digit_model

#: Constructor arguments that depend on the data; the experiment fills them in (M1+M2's
#: ``active_dims`` are chosen from the data by ``freeze_m1``), configs leave them out.
DATA_ARGUMENTS = ("input_shape", "num_classes", "num_examples", "num_labelled", "active_dims")


def _integer(minimum):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            return f"expected an integer >= {minimum}"
    return check


def _optional_integer(minimum):
    def check(value):
        if value is not None and _integer(minimum)(value):
            return f"expected an integer >= {minimum} or None"
    return check


def _positive_number(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        return "expected a positive number"


def _optional_positive_number(value):
    if value is not None and _positive_number(value):
        return "expected a positive number or None"


def _boolean(value):
    if not isinstance(value, bool):
        return "expected True or False"


def _string(optional=False):
    def check(value):
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            return "expected a non-empty string" + (" or None" if optional else "")
    return check


def _one_of(choices):
    def check(value):
        if value not in choices:
            return f"expected one of {list(choices)}"
    return check


def _fraction(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        return "expected a fraction in [0, 1]"


def _non_negative_number(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        return "expected a number >= 0"


def _decay(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        return "expected a number in [0, 1)"


def _classes(value):
    if not isinstance(value, (tuple, list)) or any(_integer(0)(v) for v in value):
        return "expected a tuple of class ids (integers >= 0), possibly empty"


def _digit_sizes(value):
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, numbers.Real) for v in value)
            or not 1 <= value[0] <= value[1]):
        return "expected (smallest, largest) digit sides in pixels with 1 <= smallest <= largest"


def _votes(value):
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or any(_integer(1)(v) for v in value)):
        return "expected two positive integers (training votes, evaluation votes)"


#: The run fields every config has (declared, with their defaults, in tfssvae/configs/base.py).
SHARED_FIELDS = {
    "dataset": _string(),
    "data_dir": _string(optional=True),
    "num_labels": _integer(1),
    "validation_size": _integer(-1),
    "epochs": _integer(1),
    "batch_size": _integer(1),
    "labelled_batch_size": _integer(-1),
    "learning_rate": _positive_number,
    "learning_rate_decay": _one_of(training.LEARNING_RATE_DECAYS),
    "learning_rate_decay_every": _optional_integer(1),
    "learning_rate_decay_factor": _optional_positive_number,
    "ema_decay": _decay,
    "seed": _integer(0),
    "precision": _one_of(training.PRECISIONS),
    "jit_compile": _boolean,
    "steps_per_call": _integer(1),
    "keep_best": _boolean,
    "strategy": _one_of(training.STRATEGIES),
    "time_limit_minutes": _optional_positive_number,
    "checkpoint_every": _integer(1),
    "keep_checkpoints": _integer(0),
    "model_dir": _string(optional=True),
    "export_dir": _string(),
    "export": _boolean,
    "verbose": _integer(0),
}

#: Run options of one model family that are not constructor arguments (top level of its config).
RUN_OPTIONS = {
    "m1m2": {"m1_epochs": _integer(1)},
    "mlvae": {"groups_per_batch": _integer(1), "group_size": _integer(1), "variable_group_sizes": _boolean,
              "held_out_classes": _classes},
    "cascade_vae": {"steps_per_epoch": _integer(1), "eval_samples": _integer(2), "factor_vae_votes": _votes,
                    "factor_vae_samples_per_value": _integer(0)},
    "faces": {"steps_per_epoch": _integer(1), "identity_supervision": _fraction,
              "lighting_supervision": _fraction, "noise": _non_negative_number, "test_size": _integer(-1)},
    "multi_digit": {"count_supervision": _fraction, "canvas_size": _integer(1), "digit_sizes": _digit_sizes,
                    "train_canvases": _integer(1), "test_canvases": _integer(1)},
}


def _kind_problem(value, reference):
    """Why ``value`` is not of the kind of ``reference`` (a package config's default), or None."""
    if reference is None:
        return None
    if isinstance(reference, (tuple, list)):
        if not isinstance(value, (tuple, list)):
            return "expected a tuple"
        problems = [_kind_problem(v, reference[0]) for v in value] if reference else []
        return next((f"{problem} in each entry" for problem in problems if problem), None)
    if isinstance(reference, bool):
        return None if isinstance(value, bool) else "expected True or False"
    if isinstance(reference, numbers.Integral):
        return None if isinstance(value, numbers.Integral) and not isinstance(value, bool) else "expected an integer"
    if isinstance(reference, numbers.Real):
        return None if isinstance(value, numbers.Real) and not isinstance(value, bool) else "expected a number"
    if isinstance(reference, str):
        return None if isinstance(value, str) else "expected a string"
    return None


def model_arguments(model_class):
    """The keyword arguments ``model_class(...)`` accepts, following ``**kwargs`` up the
    class hierarchy to ``GenerativeModel`` (data-dependent ones included)."""
    names = []
    for cls in model_class.__mro__:
        if cls is models.GenerativeModel or not issubclass(cls, models.GenerativeModel):
            break
        if "__init__" not in vars(cls):
            continue
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
        for parameter in parameters:
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY) \
                    and parameter.name not in names:
                names.append(parameter.name)
        if not any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
            break
    return tuple(names)


def hyper_parameters(model_class):
    """The constructor arguments a config's ``model`` section may set."""
    return tuple(name for name in model_arguments(model_class) if name not in DATA_ARGUMENTS)


def validate(config):
    """Checks a run config; raises a ValueError naming the first bad field.

    Checks the shared run fields' types and ranges, the model name, that ``config.model``
    holds only constructor arguments of that model (the data-dependent ones excluded),
    and that the top level holds only shared fields and the model family's run options.
    The model's constructor checks the values of its own arguments.
    """
    if not hasattr(config, "keys") or "model" not in config:
        raise ValueError("config: expected a ConfigDict with a 'model' section, e.g. tfssvae.configs.get('m2')")
    section = config.model
    if not hasattr(section, "keys") or "name" not in section:
        raise ValueError("model: expected a section with the model's 'name' and its constructor arguments")
    name = section.name
    model_class = models.model_class(name)
    accepted = hyper_parameters(model_class)
    defaults = configs.get(name).model if name in configs.NAMES else {}
    for key in section.keys():
        if key == "name":
            continue
        if key in DATA_ARGUMENTS:
            raise ValueError(f"model.{key}: set by the experiment from the data; remove it from the config")
        if key not in accepted:
            raise ValueError(f"model.{key}: not an argument of {model_class.__name__}; "
                             f"expected some of {list(accepted)}")
        # Types as in the package's config of this model (values are the constructor's to check).
        reference = defaults.get(key)
        if section[key] is None and key in model_class.nullable_arguments:
            continue
        problem = _kind_problem(section[key], reference)
        if problem:
            raise ValueError(f"model.{key}: {problem} (like the default {reference!r}), received {section[key]!r}")
    options = RUN_OPTIONS.get(name, {})
    checks = {**SHARED_FIELDS, **options}
    for key in config.keys():
        if key != "model" and key not in checks:
            raise ValueError(f"{key}: not a field of a {name} run; fields: {sorted(checks)} and model")
    for key, check in checks.items():
        if key not in config:
            raise ValueError(f"{key}: missing from the config (see tfssvae/configs/base.py)")
        value = config[key]
        problem = check(value)
        if problem:
            raise ValueError(f"{key}: {problem}, received {value!r}")
    # The loop's own checks too (the step-size fields depend on one another), before anything is written.
    loop_config(config)
    if config.labelled_batch_size == 0 and model_class.has_classifier and model_class is not models.MultiDigitModel:
        raise ValueError(f"labelled_batch_size: 0 would leave the {config.num_labels} labels unused by the "
                         f"semi-supervised {name}; expected a positive number, or -1 (half the batch, at most "
                         f"num_labels)")
    if model_class is models.CascadeVAE:
        _check_cascade_run(config)
    if model_class is models.FacesModel:  # the held-out pairs must leave some to train on
        faces.design_split(config.validation_size, config.test_size)
    if model_class is models.MultiDigitModel:
        _check_multi_digit_run(config)
    if model_class is models.MLVAE and config.group_size > config.batch_size:
        raise ValueError(f"group_size: a group of {config.group_size} examples is larger than a batch "
                         f"(batch_size={config.batch_size}); its members must fit in one batch to share a content")


def loop_config(config):
    """The ``training.TrainConfig`` of a run config (its loop fields; raises its ValueErrors)."""
    return training.TrainConfig(
        epochs=config.epochs, learning_rate=config.learning_rate,
        learning_rate_decay=config.learning_rate_decay, learning_rate_decay_every=config.learning_rate_decay_every,
        learning_rate_decay_factor=config.learning_rate_decay_factor, ema_decay=config.ema_decay,
        jit_compile=config.jit_compile,
        checkpoint_every=config.checkpoint_every, steps_per_call=config.steps_per_call,
        keep_best=config.keep_best, verbose=config.verbose, time_limit_minutes=config.time_limit_minutes,
        keep_checkpoints=config.keep_checkpoints,
    )


def _check_multi_digit_run(config):
    """The digits must fit on the canvas, and labelled batches need labelled canvases (and leave room)."""
    if config.digit_sizes[1] > config.canvas_size:
        raise ValueError(f"digit_sizes: the largest digit side {config.digit_sizes[1]:g} does not fit on a canvas of "
                         f"canvas_size={config.canvas_size} pixels; expected at most {config.canvas_size}")
    labelled = _labelled_canvases(config)
    if config.labelled_batch_size > 0 and labelled == 0:
        raise ValueError(f"labelled_batch_size: {config.labelled_batch_size} labelled canvases a batch, but "
                         f"count_supervision={config.count_supervision} observes no count; set it to -1 or 0")
    if config.labelled_batch_size == 0 and labelled > 0:
        raise ValueError(f"labelled_batch_size: 0 would leave the {labelled} observed counts unused; expected a "
                         f"positive number, or -1 (half the batch, at most the labelled canvases)")
    if config.labelled_batch_size >= config.batch_size:
        raise ValueError(f"labelled_batch_size: expected fewer than batch_size={config.batch_size}, so every batch "
                         f"has unlabelled canvases; received {config.labelled_batch_size}")
    unlabelled = config.batch_size - _labelled_batch_size(config)
    if config.train_canvases < unlabelled:
        raise ValueError(f"train_canvases: expected at least one batch of {unlabelled} unlabelled canvases, "
                         f"received {config.train_canvases}")


def _labelled_canvases(config):
    """How many training canvases have their count observed: round(count_supervision * n), at least 1 if > 0."""
    return int(faces.supervision_mask(config.train_canvases, config.count_supervision, 0, "count_supervision").sum())


def _labelled_batch_size(config):
    if config.labelled_batch_size >= 0:
        return config.labelled_batch_size
    return min(config.batch_size // 2, _labelled_canvases(config))


def _check_cascade_run(config):
    """The cascade's schedule must fit in the run, and FactorVAE needs a vote per factor at least."""
    defaults = {name: parameter.default for name, parameter
                in inspect.signature(models.CascadeVAE.__init__).parameters.items()}
    model = {**defaults, **config.model.to_dict()}
    total = config.epochs * config.steps_per_epoch
    run = f"the run has {total} steps (epochs={config.epochs} * steps_per_epoch={config.steps_per_epoch})"
    if model["assign_start"] is not None and model["assign_start"] >= total:
        raise ValueError(f"model.assign_start: the assignment of d would start at iteration "
                         f"{model['assign_start']}, but {run}; lower it or lengthen the run")
    relieve_at = model["relieve_at"]
    source = "model.relieve_at"
    if relieve_at is None:
        relieve_at = cascade_vae.relieve_schedule(model["latent_dim"], model["relieve_every"], model["assign_start"])
        source = f"model.relieve_every: stages of {model['relieve_every']} iterations"
    late = [(i + 1, t) for i, t in enumerate(relieve_at) if t >= total]
    if late:
        raise ValueError(f"{source} relieve dimension {late[0][0]} at iteration {late[0][1]} (schedule "
                         f"{list(relieve_at)}), but {run}; shorten the stages or lengthen the run")
    vote_batch = inspect.signature(metrics.factor_vae_score).parameters["batch_size"].default
    if 0 < config.factor_vae_samples_per_value < vote_batch:
        raise ValueError(f"factor_vae_samples_per_value: expected 0 (fresh images every vote) or at least a "
                         f"vote's batch of {vote_batch}, received {config.factor_vae_samples_per_value}")
    num_factors = len(sprites.FACTOR_SIZES)
    if min(config.factor_vae_votes) < num_factors:
        raise ValueError(f"factor_vae_votes: expected at least one vote per factor ({num_factors} sprite "
                         f"factors) for training and evaluation, received {tuple(config.factor_vae_votes)}")


def default_model_dir(config):
    dataset = re.sub(r"[^A-Za-z0-9]+", "-", config.dataset).strip("-")
    if config.model.name == "faces":  # supervised by fractions, not a label count
        decoder = config.model.get("decoder", "intrinsic")
        return os.path.join("runs", f"faces_{decoder}_identity{config.identity_supervision:g}_"
                                    f"lighting{config.lighting_supervision:g}_seed{config.seed}")
    if config.model.name == "multi_digit":  # supervised by a fraction of canvases, not a label count
        return os.path.join("runs", f"multi_digit_{dataset}_count{config.count_supervision:g}_seed{config.seed}")
    return os.path.join("runs", f"{config.model.name}_{dataset}_{config.num_labels}labels_seed{config.seed}")


def build_model(config, input_shape, num_classes, num_examples):
    """The model of ``config.model``, sized for the data.

    ``config.model`` holds the registry name and constructor arguments; the data-dependent
    ``num_examples`` and ``num_labelled`` (``config.num_labels``) are passed to classes that take them.
    """
    model_class = models.model_class(config.model.name)
    kwargs = {key: value for key, value in config.model.items() if key != "name"}
    data = {"num_examples": num_examples, "num_labelled": config.num_labels}
    accepted = model_arguments(model_class)
    kwargs.update({key: value for key, value in data.items() if key in accepted})
    return model_class(input_shape, num_classes, **kwargs)


def _validation_size(config, source):
    if config.validation_size < 0:
        return min(5000, len(source.train_labels) // 10)
    return config.validation_size


def _train_semi_supervised(config, model, source, model_dir, train_config):
    """Label split, mixed batches, training (two stages for M1+M2); returns the results so far."""
    train_idx, val_idx = data_lib.validation_split(source.train_labels, _validation_size(config, source),
                                                   config.seed)
    train_images, train_labels = source.train_images[train_idx], source.train_labels[train_idx]
    labelled = data_lib.balanced_labelled_indices(train_labels, config.num_labels, source.num_classes,
                                                  config.seed)
    labelled_batch_size = config.labelled_batch_size
    if labelled_batch_size < 0:
        labelled_batch_size = min(config.batch_size // 2, config.num_labels)
    batches = data_lib.SemiSupervisedSource(train_images, train_labels, labelled, config.batch_size,
                                            labelled_batch_size, config.seed)
    validation = (source.train_images[val_idx], source.train_labels[val_idx])
    if isinstance(model, models.M1M2):
        # Stage 1: M1 alone (the VAE learns from every image); stage 2: M2 on the frozen M1.
        m1_config = dataclasses.replace(train_config, epochs=config.m1_epochs)
        training.train(model.m1, batches, os.path.join(model_dir, "m1"), m1_config)
        # Kingma et al.: M2 reads only the M1 dimensions whose posterior mean varies over the data.
        active = model.freeze_m1(train_images)
        if config.verbose:
            print(f"M1+M2: {len(active)} of {model.m1.latent_dim} M1 dimensions are active and go to M2")
        if training.is_chief():
            _write_model_json(model_dir, config, model)
        summary = training.train(model, batches, os.path.join(model_dir, "m2"), train_config, validation)
    else:
        summary = training.train(model, batches, model_dir, train_config, validation)
    return summary, {
        "num_labels": config.num_labels,
        "test_error": metrics.classification_error(model, source.test_images, source.test_labels),
        "validation_error": summary["validation_error"],
    }


def grouped_batches(config, source):
    """The ML-VAE's training batches: groups by the training labels, from the classes not held out."""
    rows = data_lib.training_rows(source.train_labels, config.held_out_classes, source.num_classes)
    return data_lib.GroupedSource(source.train_images[rows], source.train_labels[rows], config.groups_per_batch,
                                  config.group_size, config.seed, config.variable_group_sizes)


def _train_grouped(config, model, source, model_dir, train_config):
    """Groups by the training labels, training, and the ML-VAE evaluation on test data."""
    batches = grouped_batches(config, source)
    summary = training.train(model, batches, model_dir, train_config)
    return summary, evaluation.mlvae_report(model, source, config.seed,
                                            held_out_classes=tuple(config.held_out_classes))


def _train_sprites(config, model, source, model_dir, train_config):
    """Endless procedural sprites, then FactorVAE score, MIG and shape accuracy."""
    del source
    batches = sprites.SpritesSource(config.batch_size, config.seed, config.steps_per_epoch)
    summary = training.train(model, batches, model_dir, train_config)
    return summary, evaluation.cascade_report(model, config.seed, config.eval_samples,
                                              tuple(config.factor_vae_votes), config.factor_vae_samples_per_value,
                                              verbose=bool(config.verbose))


def _train_faces(config, model, source, model_dir, train_config):
    """Procedural faces with per-pair supervision masks, then the held-out errors.

    The training pairs of the design (``faces.design_split``) carry an identity mask and a
    light mask drawn independently for the seed; the model kept is the one with the lowest
    identity error on the validation pairs; the errors reported are on the test pairs
    (images of training identities under lights not shown for them in training).  The
    figures of ``faces_figures.write_all`` (``faces_lighting.png``, ``faces_identity.png``,
    ``faces_relight.png``, ``faces_intrinsics.png`` for the intrinsic decoder) go into
    ``model_dir``.
    """
    del source
    split = faces.design_split(config.validation_size, config.test_size)
    num_train = len(split["train"])
    # Identity labels spread evenly over the identities (M2's labelled sets are balanced
    # too); the lights are continuous and drawn uniformly.
    identity_mask = faces.supervision_mask(num_train, config.identity_supervision, [config.seed, 1],
                                           "identity_supervision", groups=faces.design("train")[0][split["train"]])
    light_mask = faces.supervision_mask(num_train, config.lighting_supervision, [config.seed, 2],
                                        "lighting_supervision")
    batches = faces.SupervisedFacesSource(split["train"], identity_mask, light_mask, config.batch_size, config.seed,
                                          config.steps_per_epoch, noise=config.noise)
    # Held-out renderings use their own noise seeds, fixed like the split.
    held_out = {name: faces.render_pairs(split[name], seed, noise=config.noise)
                for name, seed in (("validation", 1), ("test", 2)) if len(split[name])}
    validation = (held_out["validation"]["x"], held_out["validation"]["identity"]) if "validation" in held_out \
        else None
    summary = training.train(model, batches, model_dir, train_config, validation)
    measured = {"identity_supervision": config.identity_supervision,
                "lighting_supervision": config.lighting_supervision,
                "labelled_identities": int(identity_mask.sum()), "labelled_lights": int(light_mask.sum()),
                "training_pairs": num_train, "decoder": model.decoder}
    for name, data in held_out.items():
        errors = faces_model.heldout_errors(model, data["x"], data["identity"], data["light"])
        measured.update({f"{name}_{key}": value for key, value in errors.items()})
        measured[f"{name}_pairs"] = len(data["x"])
    if training.is_chief():
        # The issue-12 figures beside the metrics: deterministic (style at the prior mean,
        # fixed input noise) and about a second, so every run leaves them in its directory.
        faces_figures.write_all(model, model_dir)
    return summary, measured


def _compose(composer, num_canvases, seed, chunk=1000):
    """``num_canvases`` canvases of ``composer``, drawn in chunks (each from its own generator
    seeded ``[*seed, chunk index]``) so that the renderer's temporaries stay small."""
    parts = [composer.sample(np.random.default_rng([*seed, i]), min(chunk, num_canvases - start))
             for i, start in enumerate(range(0, num_canvases, chunk))]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


#: Test canvases shown in a multi-digit run's ``decomposition.png`` (boxes, each step's digit, reconstruction).
DECOMPOSITION_CANVASES = 8


def multi_digit_max_digits(config):
    """K of a multi-digit run: its ``model.max_digits``, else the model's default (3)."""
    return config.model.get("max_digits", inspect.signature(models.MultiDigitModel.__init__)
                            .parameters["max_digits"].default)


def multi_digit_canvases(config, source, sets=("train", "validation", "test")):
    """The canvases of a multi-digit run and which of them have their count observed.

    One function for every user of a run's data (``_train_multi_digit``, the supervised
    count baseline ``tfssvae.count_baseline``), so that a baseline sees exactly the run's
    labelled, validation and test canvases.  Canvases have side ``config.canvas_size``,
    digits of sides in ``config.digit_sizes`` and 0..K digits (K =
    ``multi_digit_max_digits(config)``); each set is composed once for ``config.seed``.

    Args:
      config: a multi-digit run config (``tfssvae/configs/multi_digit.py``).
      source: the digit source (``data.load_source(config.dataset, config.data_dir)``).
      sets: which of ``"train"``, ``"validation"`` and ``"test"`` to compose (each set's
        canvases are the same whichever others are asked for).

    Returns:
      dict: the sets asked for, of ``"train"`` (``config.train_canvases`` canvases of the
      source's training digits), ``"test"`` (``config.test_canvases`` of its test digits)
      and, unless the validation size is 0, ``"validation"`` (``validation_size`` canvases
      of training digits; -1: a tenth of ``train_canvases``, at least 1, at most 5,000): each the
      ``MultiDigitComposer.sample`` dict (``"x"`` float32 ``[n, size, size, 1]``,
      ``"count"`` int32 ``[n]``, ``"boxes"`` ``[n, K, 4]``, ...); and ``"labelled"``,
      bool ``[train_canvases]``: the training canvases whose count is observed,
      ``round(count_supervision * n)`` of them (at least one when the fraction is > 0),
      chosen by the seed.
    """
    options = dict(canvas_size=config.canvas_size, max_digits=multi_digit_max_digits(config),
                   digit_sizes=tuple(config.digit_sizes))
    train_composer = multi_digit_data.MultiDigitComposer(source.train_images, source.train_labels, **options)
    test_composer = multi_digit_data.MultiDigitComposer(source.test_images, source.test_labels, **options)
    unknown = set(sets) - {"train", "validation", "test"}
    if unknown:
        raise ValueError(f"sets: expected some of 'train', 'validation', 'test', received {sorted(unknown)}")
    # Each set has its own seed stream ([seed, 1..4]): changing one size leaves the others as they were.
    validation_size = config.validation_size if config.validation_size >= 0 \
        else min(5000, max(1, config.train_canvases // 10))
    plan = {"train": (train_composer, config.train_canvases, 1), "test": (test_composer, config.test_canvases, 3),
            "validation": (train_composer, validation_size, 2)}
    canvases = {name: _compose(composer, size, [config.seed, stream])
                for name, (composer, size, stream) in plan.items() if name in sets and size}
    canvases["labelled"] = faces.supervision_mask(config.train_canvases, config.count_supervision,
                                                  [config.seed, 4], "count_supervision")
    return canvases


def multi_digit_batches(config, canvases):
    """The training batches of a multi-digit run: ``canvases["train"]`` (``multi_digit_canvases``)
    with the counts as labels, observed where ``canvases["labelled"]``, mixed in every batch
    as the semi-supervised models' (``data.SemiSupervisedSource``)."""
    train = canvases["train"]
    return data_lib.SemiSupervisedSource(train["x"], train["count"], np.flatnonzero(canvases["labelled"]),
                                         config.batch_size, _labelled_batch_size(config), config.seed)


def _train_multi_digit(config, model, source, model_dir, train_config):
    """Canvases composed from the source's digits, a fraction with observed counts, then the test figures.

    ``train_canvases`` canvases from the training digits are composed once for the seed;
    ``count_supervision`` of them (exactly ``round(fraction * n)``, chosen by the seed)
    carry their count, and batches mix unlabelled and labelled canvases as the
    semi-supervised models' do (``multi_digit_canvases``, ``multi_digit_batches``).  The
    model kept is the one with the best count accuracy on ``validation_size`` further
    canvases of training digits; the figures reported (``multi_digit.evaluate_canvases``:
    count accuracy, reconstruction error, mean IoU of matched boxes on correctly counted
    canvases) are on ``test_canvases`` canvases of the source's test digits, and
    ``decomposition.png`` in the model directory shows how the model explains the first
    ``DECOMPOSITION_CANVASES`` of them (``figures.decomposition``).
    """
    canvases = multi_digit_canvases(config, source)
    held_out = {name: canvases[name] for name in ("test", "validation") if name in canvases}
    batches = multi_digit_batches(config, canvases)
    validation = (held_out["validation"]["x"], held_out["validation"]["count"]) if "validation" in held_out \
        else None
    summary = training.train(model, batches, model_dir, train_config, validation)
    measured = {"count_supervision": config.count_supervision, "labelled_canvases": int(canvases["labelled"].sum()),
                "training_canvases": config.train_canvases, "max_digits": model.max_digits}
    for name, data in held_out.items():
        figures = multi_digit_model.evaluate_canvases(model, data["x"], data["count"], data["boxes"])
        measured.update({f"{name}_{key}": value for key, value in figures.items()})
        measured[f"{name}_canvases"] = len(data["x"])
    if training.is_chief():  # the other workers of a distributed run write nothing into the model directory
        multi_digit_model.write_decomposition(model, held_out["test"]["x"][:DECOMPOSITION_CANVASES],
                                              os.path.join(model_dir, "decomposition.png"))
    return summary, measured


def _write_json(path, content):
    """Writes ``content`` to ``path`` through a temporary file renamed into place (never half-written)."""
    with open(path + ".tmp", "w") as f:
        json.dump(content, f, indent=2, default=str)
    os.replace(path + ".tmp", path)


def _write_model_json(model_dir, config, model):
    """What rebuilds the model (``config``: its constructor arguments) and the resolved run config."""
    resolved = {**config.to_dict(), "model_dir": model_dir}
    _write_json(os.path.join(model_dir, "model.json"),
                {"model": config.model.name, "config": model.get_config(), "run_config": resolved})


#: Run fields a rerun in the same model directory may change: they do not change what is
#: trained (``epochs`` may grow to train longer; the run resumes where it stopped).
RESUMABLE_FIELDS = ("epochs", "verbose", "export", "export_dir", "steps_per_call", "checkpoint_every",
                    "jit_compile", "data_dir", "model_dir", "time_limit_minutes", "keep_checkpoints",
                    "strategy",  # checkpoints restore under any strategy
                    "model.global_assignment")  # only acts with several replicas; absent in older runs


def _flat(settings, prefix=""):
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_same_settings(model_dir, config):
    """ValueError naming the settings that differ when ``model_dir`` holds a run made with other
    settings than ``config`` (its ``model.json``); nothing is written.  Fields in
    ``RESUMABLE_FIELDS`` may differ."""
    path = os.path.join(model_dir, "model.json")
    if not os.path.isfile(path):
        return
    try:
        with open(path) as f:
            previous = json.load(f).get("run_config")
    except (OSError, ValueError) as error:
        raise ValueError(f"model_dir: {path} cannot be read ({error}); remove {model_dir} or choose another "
                         f"model_dir") from None
    if previous is None:
        return  # written before run configs were recorded
    now = _flat(json.loads(json.dumps(config.to_dict(), default=str)))
    # Runs from before these fields: a constant step, no weight average.
    before = {"learning_rate_decay": "constant", "learning_rate_decay_every": None,
              "learning_rate_decay_factor": None, "ema_decay": 0.0, **_flat(previous)}
    differ = [key for key in sorted(set(now) | set(before))
              if key not in RESUMABLE_FIELDS and now.get(key, "(absent)") != before.get(key, "(absent)")]
    if differ:
        listed = "; ".join(f"{key}: {before.get(key, '(absent)')!r} there, {now.get(key, '(absent)')!r} now"
                           for key in differ)
        raise ValueError(f"model_dir: {model_dir} holds a run with other settings ({listed}); rerun with its "
                         f"settings to resume it, or choose another model_dir")


@contextlib.contextmanager
def locked(model_dir):
    """Holds ``model_dir/.lock`` (``fcntl.flock``) for the run: a second run on the same directory is
    refused with a ValueError.  The operating system releases the lock when the process ends,
    killed or not, so a stale lock never blocks."""
    path = os.path.join(model_dir, ".lock")
    try:
        os.makedirs(model_dir, exist_ok=True)
        handle = open(path, "a+")
    except OSError as error:  # e.g. a read-only file system, where root passes the access check
        raise ValueError(f"model_dir: {path} cannot be written ({error.strerror or error})") from None
    try:
        import fcntl  # POSIX; elsewhere runs are not locked

        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise ValueError(f"model_dir: {model_dir} is in use by another run (process {holder} holds {path}); "
                             f"wait for it to finish or choose another model_dir") from None
    except ImportError:
        pass
    except BaseException:
        handle.close()
        raise
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


def run(config):
    """Runs ``config`` end to end and returns the metrics dict also written to ``metrics.json``.

    The Keras dtype policy is ``config.precision`` while the model is built and trained,
    and is put back as it was afterwards.
    """
    validate(config)  # a bad config or an unknown model fails before any data is loaded
    # Before any other TensorFlow operation: MultiWorkerMirroredStrategy configures the
    # process's collective ops when it is created.
    strategy = training.make_strategy(config.strategy)
    name = config.model.name
    model_class = models.model_class(name)
    keras.utils.set_random_seed(config.seed)
    if (model_class is models.CascadeVAE) != (config.dataset == "sprites"):
        raise ValueError(f"dataset: cascade_vae trains on dataset 'sprites' (procedural dSprites) and the other "
                         f"models on image classification data; received model {name!r} with "
                         f"dataset {config.dataset!r}")
    if (model_class is models.FacesModel) != (config.dataset == "faces"):
        raise ValueError(f"dataset: faces trains on dataset 'faces' (procedural Yale-B-like faces) and the other "
                         f"models on their own data; received model {name!r} with dataset {config.dataset!r}")
    # training.train refuses the same; checked here too so that it fails before the data are
    # loaded and before M1+M2 spends its M1 stage (M1 itself compiles).
    if config.jit_compile and model_class.xla_incompatibility:
        raise ValueError(f"jit_compile: {model_class.xla_incompatibility}; run it with jit_compile=False")
    previous_policy = keras.mixed_precision.global_policy()
    training.set_precision(config.precision)
    try:
        return _run(config, name, model_class, strategy)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _run(config, name, model_class, strategy):
    model_dir = config.model_dir or default_model_dir(config)
    export_base = os.path.join(config.export_dir, name)
    chief = training.is_chief(strategy)
    # Before anything is loaded or written: another run's directory, and where results go.
    check_same_settings(model_dir, config)
    if not chief:
        # Another worker of the same run: the chief holds the lock and writes every result;
        # this one trains alongside it and writes only scratch checkpoints (training.train).
        with strategy.scope():
            return _run_locked(config, name, model_class, model_dir, export_base, chief=False)
    export_lib.check_writable(model_dir, "model_dir")
    if config.export:
        export_lib.check_writable(export_base, "export_dir")
    with locked(model_dir):
        check_same_settings(model_dir, config)  # again: a run may have started here meanwhile
        # Under the strategy's scope the model's variables are mirrored over its replicas
        # (the default strategy's scope changes nothing).
        with strategy.scope():
            return _run_locked(config, name, model_class, model_dir, export_base)


def _run_locked(config, name, model_class, model_dir, export_base, chief=True):
    if model_class is models.CascadeVAE:
        source = None
        model = build_model(config, sprites.IMAGE_SHAPE, len(sprites.SHAPE_NAMES), None)
        train = _train_sprites
    elif model_class is models.FacesModel:
        source = None
        model = build_model(config, faces.IMAGE_SHAPE, faces.NUM_TRAIN_IDENTITIES, None)
        train = _train_faces
    elif model_class is models.MultiDigitModel:
        # The digits the canvases are composed from; the model sees canvases, one count class a value 0..K.
        source = data_lib.load_source(config.dataset, config.data_dir)
        if source.image_shape[-1] != 1 or source.image_shape[0] != source.image_shape[1]:
            raise ValueError(f"dataset: multi-digit canvases need square grey digits, received {config.dataset!r} "
                             f"with images of shape {source.image_shape}")
        model = build_model(config, (config.canvas_size, config.canvas_size, 1),
                            multi_digit_max_digits(config) + 1, None)
        train = _train_multi_digit
    else:
        source = data_lib.load_source(config.dataset, config.data_dir)
        # The classifier weight alpha * N / N_labelled counts the images left after validation.
        num_examples = len(source.train_images) - _validation_size(config, source)
        model = build_model(config, source.image_shape, source.num_classes, num_examples)
        train = _train_semi_supervised if model.has_classifier else _train_grouped
        if model_class is models.MLVAE:  # a held-out class the data lack is refused before anything is written
            data_lib.training_rows(source.train_labels, config.held_out_classes, source.num_classes)
    if chief:
        _write_model_json(model_dir, config, model)
    summary, measured = train(config, model, source, model_dir, loop_config(config))
    results = {
        "model": name,
        "dataset": config.dataset,
        **measured,
        "train_examples_per_second": summary["train_examples_per_second"],
        "steps": summary["steps"],
        "epochs": config.epochs,
        "precision": config.precision,
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
    }
    if not chief:
        return {**results, "chief": False}
    # The figures are kept first, so that a failed export loses none of them.
    _write_json(os.path.join(model_dir, "metrics.json"), results)
    if config.export:
        results["export_path"] = export_lib.export(model, export_base, metadata={"metrics": results})
        _write_json(os.path.join(model_dir, "metrics.json"), results)
    if config.verbose:
        shown = {k: v for k, v in results.items() if k not in ("model", "dataset", "export_path")}
        print(f"\n{name} on {config.dataset}: {json.dumps(shown)}")
        if "test_error" in results:
            print(f"Test error: {100 * results['test_error']:.2f} % with {config.num_labels} labels")
        if config.export:
            print(f"SavedModel: {results['export_path']}")
        print(f"Metrics: {os.path.join(model_dir, 'metrics.json')}")
    return results
