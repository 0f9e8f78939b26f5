"""A whole run: load data, split labels, build the model, train, evaluate, export.

The training binary maps its flags onto ``Settings`` and calls ``run``; tests and
benchmarks call ``run`` directly.  Everything a run produces lands in its model
directory (checkpoints, TensorBoard events, ``model.json``, ``metrics.json``) and,
unless disabled, as a numbered SavedModel version under ``export_dir/<model>/``.
"""
import dataclasses
import json
import os
import re

import keras
import tensorflow as tf

from tfssvae import data as data_lib
from tfssvae import export as export_lib
from tfssvae.data import sprites
from tfssvae import evaluation, metrics, models, training


@dataclasses.dataclass
class Settings:
    """Everything that defines a run; the training binary's flags have the same names."""

    model: str = "m2"
    dataset: str = "digits"
    data_dir: str | None = None
    num_labels: int = 100
    validation_size: int = -1  # -1: a tenth of the training set, at most 5,000
    epochs: int = 10
    m1_epochs: int = 10  # M1+M2 only: epochs of the M1 stage
    batch_size: int = 100
    labelled_batch_size: int = -1  # -1: half the batch, at most num_labels
    learning_rate: float = 3e-4
    alpha: float = 0.1
    gamma: float = 1.0  # ssdgm: weight of supervised examples
    num_samples: int = 1  # ssdgm: S, samples of z per example
    variant: str = "weighted"  # ssdgm: "weighted" (the paper's estimator) or "iw" (log-mean-exp)
    discrete: str = "enumerate"  # ssdgm: latent class summed out ("enumerate") or Concrete ("relax")
    temperature: float = 0.66  # ssdgm: Concrete temperature
    discrete_size: int = 3  # cascade_vae: values of the discrete code d
    beta_h: float = 10.0  # cascade_vae: KL weight of penalised dimensions
    beta_l: float = 0.1  # cascade_vae: KL weight of relieved dimensions
    relieve_every: int = 20000  # cascade_vae: iterations between relieving one more dimension
    assign_start: int = 80000  # cascade_vae: iteration from which d is learned by assignment
    pair_penalty: float = 0.001  # cascade_vae: cost per pair of batch examples sharing d
    solver: str = "fast"  # cascade_vae: "fast" or "networkx"
    steps_per_epoch: int = 1000  # cascade_vae: sprites are endless; an epoch is this many steps
    eval_samples: int = 10000  # cascade_vae: examples for MIG and shape accuracy
    factor_vae_votes: tuple = (10000, 5000)  # cascade_vae: FactorVAE training / evaluation votes
    content_dim: int = 10  # mlvae
    style_dim: int = 10  # mlvae
    groups_per_batch: int = 16  # mlvae: groups G in a batch
    group_size: int = 5  # mlvae: members K of a group (the largest with variable sizes)
    variable_group_sizes: bool = False  # mlvae: group sizes drawn from 1..K
    group_method: str = "product"  # mlvae: "product", "average" or "geometric"
    include_prior: bool = False  # mlvae: the prior as one more factor of the group posterior
    content_per_observation: bool = False  # mlvae: sample group content per member, not per group
    latent_dim: int | None = None  # None: the model's default (50; CascadeVAE 6)
    hidden_units: tuple = (500,)
    activation: str = "softplus"
    likelihood: str = "bernoulli"
    seed: int = 0
    jit_compile: bool = False
    checkpoint_every: int = 1000
    model_dir: str | None = None  # default: runs/<model>_<dataset>_<num_labels>labels_seed<seed>
    export_dir: str = "saved_models"
    export: bool = True
    verbose: int = 1


def default_model_dir(settings):
    dataset = re.sub(r"[^A-Za-z0-9]+", "-", settings.dataset).strip("-")
    return os.path.join("runs", f"{settings.model}_{dataset}_{settings.num_labels}labels_seed{settings.seed}")


def build_model(settings, input_shape, num_classes, num_examples):
    """The model named by ``settings.model``, sized for the data."""
    model_class = models.model_class(settings.model)
    common = dict(
        hidden_units=tuple(settings.hidden_units),
        activation=settings.activation,
        likelihood=settings.likelihood,
    )
    semi_supervised = dict(alpha=settings.alpha, num_examples=num_examples, num_labelled=settings.num_labels)
    latent_dim = settings.latent_dim or 50
    if model_class is models.CascadeVAE:
        return models.CascadeVAE(
            input_shape, num_classes, latent_dim=settings.latent_dim or 6, discrete_size=settings.discrete_size,
            beta_h=settings.beta_h, beta_l=settings.beta_l, relieve_every=settings.relieve_every,
            assign_start=settings.assign_start, pair_penalty=settings.pair_penalty, solver=settings.solver)
    if model_class is models.M1:
        return models.M1(input_shape, num_classes, latent_dim=latent_dim, **common)
    if model_class is models.M2:
        return models.M2(input_shape, num_classes, latent_dim=latent_dim, **common, **semi_supervised)
    if model_class is models.MLVAE:
        return models.MLVAE(
            input_shape, num_classes, content_dim=settings.content_dim, style_dim=settings.style_dim,
            group_method=settings.group_method, include_prior=settings.include_prior,
            content_per_observation=settings.content_per_observation, **common,
        )
    if issubclass(model_class, models.SSDGM):
        return model_class(
            input_shape, num_classes, latent_dim=latent_dim, gamma=settings.gamma,
            num_samples=settings.num_samples, variant=settings.variant, discrete=settings.discrete,
            temperature=settings.temperature, **common, **semi_supervised,
        )
    return models.M1M2(
        input_shape, num_classes, m1_latent_dim=latent_dim, m2_latent_dim=latent_dim,
        **common, **semi_supervised,
    )


def _validation_size(settings, source):
    if settings.validation_size < 0:
        return min(5000, len(source.train_labels) // 10)
    return settings.validation_size


def _train_semi_supervised(settings, model, source, model_dir, config):
    """Label split, mixed batches, training (two stages for M1+M2); returns the results so far."""
    train_idx, val_idx = data_lib.validation_split(source.train_labels, _validation_size(settings, source),
                                                   settings.seed)
    train_images, train_labels = source.train_images[train_idx], source.train_labels[train_idx]
    labelled = data_lib.balanced_labelled_indices(train_labels, settings.num_labels, source.num_classes,
                                                  settings.seed)
    labelled_batch_size = settings.labelled_batch_size
    if labelled_batch_size < 0:
        labelled_batch_size = min(settings.batch_size // 2, settings.num_labels)
    batches = data_lib.SemiSupervisedSource(train_images, train_labels, labelled, settings.batch_size,
                                            labelled_batch_size, settings.seed)
    validation = (source.train_images[val_idx], source.train_labels[val_idx])
    if isinstance(model, models.M1M2):
        # Stage 1: M1 alone (the VAE learns from every image); stage 2: M2 on the frozen M1.
        m1_config = dataclasses.replace(config, epochs=settings.m1_epochs)
        training.train(model.m1, batches, os.path.join(model_dir, "m1"), m1_config)
        model.freeze_m1()
        summary = training.train(model, batches, os.path.join(model_dir, "m2"), config, validation)
    else:
        summary = training.train(model, batches, model_dir, config, validation)
    return summary, {
        "num_labels": settings.num_labels,
        "test_error": metrics.classification_error(model, source.test_images, source.test_labels),
        "validation_error": summary["validation_error"],
    }


def _train_grouped(settings, model, source, model_dir, config):
    """Groups by the training labels, training, and the ML-VAE evaluation on test data."""
    batches = data_lib.GroupedSource(source.train_images, source.train_labels, settings.groups_per_batch,
                                     settings.group_size, settings.seed, settings.variable_group_sizes)
    summary = training.train(model, batches, model_dir, config)
    return summary, evaluation.mlvae_report(model, source, settings.seed)


def _train_sprites(settings, model, source, model_dir, config):
    """Endless procedural sprites, then FactorVAE score, MIG and shape accuracy."""
    del source
    batches = sprites.SpritesSource(settings.batch_size, settings.seed, settings.steps_per_epoch)
    summary = training.train(model, batches, model_dir, config)
    return summary, evaluation.cascade_report(model, settings.seed, settings.eval_samples,
                                              tuple(settings.factor_vae_votes), verbose=bool(settings.verbose))


def run(settings):
    """Runs ``settings`` end to end and returns the metrics dict also written to ``metrics.json``."""
    model_class = models.model_class(settings.model)  # an unknown model fails before any data is loaded
    keras.utils.set_random_seed(settings.seed)
    if (model_class is models.CascadeVAE) != (settings.dataset == "sprites"):
        raise ValueError(f"dataset: cascade_vae trains on --dataset=sprites (procedural dSprites) and the other "
                         f"models on image classification data; received model {settings.model!r} with "
                         f"dataset {settings.dataset!r}")
    if model_class is models.CascadeVAE:
        if settings.jit_compile:
            raise ValueError("jit_compile: cascade_vae solves its assignment on the host (tf.numpy_function), "
                             "which XLA cannot compile; run it without --jit_compile")
        source = None
        model = build_model(settings, sprites.IMAGE_SHAPE, len(sprites.SHAPE_NAMES), None)
        train = _train_sprites
    else:
        source = data_lib.load_source(settings.dataset, settings.data_dir)
        # The classifier weight alpha * N / N_labelled counts the images left after validation.
        num_examples = len(source.train_images) - _validation_size(settings, source)
        model = build_model(settings, source.image_shape, source.num_classes, num_examples)
        train = _train_semi_supervised if model.has_classifier else _train_grouped
    model_dir = settings.model_dir or default_model_dir(settings)
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "model.json"), "w") as f:
        json.dump({"model": settings.model, "config": model.get_config(),
                   "settings": dataclasses.asdict(settings)}, f, indent=2, default=str)
    config = training.TrainConfig(
        epochs=settings.epochs, learning_rate=settings.learning_rate, jit_compile=settings.jit_compile,
        checkpoint_every=settings.checkpoint_every, verbose=settings.verbose,
    )
    summary, measured = train(settings, model, source, model_dir, config)
    results = {
        "model": settings.model,
        "dataset": settings.dataset,
        **measured,
        "train_examples_per_second": summary["train_examples_per_second"],
        "steps": summary["steps"],
        "epochs": settings.epochs,
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
    }
    if settings.export:
        results["export_path"] = export_lib.export(
            model, os.path.join(settings.export_dir, settings.model), metadata={"metrics": results}
        )
    with open(os.path.join(model_dir, "metrics.json"), "w") as f:
        json.dump(results, f, indent=2)
    if settings.verbose:
        shown = {k: v for k, v in results.items() if k not in ("model", "dataset", "export_path")}
        print(f"\n{settings.model} on {settings.dataset}: {json.dumps(shown)}")
        if "test_error" in results:
            print(f"Test error: {100 * results['test_error']:.2f} % with {settings.num_labels} labels")
        if settings.export:
            print(f"SavedModel: {results['export_path']}")
        print(f"Metrics: {os.path.join(model_dir, 'metrics.json')}")
    return results
