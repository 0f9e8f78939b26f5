r"""Evaluates a trained model.

  # classifiers (m1, m2, m1m2, ssdgm_*): test error through the SavedModel's classify signature
  python -m binaries.evaluate --saved_model=saved_models/m2/1 --dataset=digits
  # ML-VAE: probes, test bound against group size, n-shot accuracy (seen and held-out classes), and
  # PNG figures: swap.png, interpolation.png, pca.png (content and style coloured by class)
  python -m binaries.evaluate --model_dir=runs/mlvae_digits_100labels_seed0 --dataset=digits --output_dir=figures
  # multi-digit: count accuracy, reconstruction error and box IoU on the run's test canvases (composed
  # again from --dataset's test digits with the run's settings), and decomposition.png
  python -m binaries.evaluate --model_dir=runs/multi_digit_digits_count0.1_seed0 --dataset=digits
  # CascadeVAE: FactorVAE score, MIG, shape accuracy of d
  python -m binaries.evaluate --model_dir=runs/cascade_vae_sprites_100labels_seed0 --dataset=sprites
  # ... and the same at every checkpoint the run kept: learning_curve.json and .png
  python -m binaries.evaluate --model_dir=DIR --dataset=sprites --learning_curve
"""
import json
import os
import sys

import numpy as np
from absl import app, flags, logging

flags.DEFINE_string("saved_model", None, "A SavedModel version directory written by tfssvae (classifiers).")
flags.DEFINE_string("model_dir", None, "A training run's model directory (any model; ML-VAE needs this).")
flags.DEFINE_string("dataset", "digits", "Data source whose test split is evaluated.")
flags.DEFINE_string("data_dir", None, "TFDS data directory for 'tfds:' sources.")
flags.DEFINE_string("output_dir", None,
                    "Where figures go (ML-VAE; CascadeVAE with --learning_curve); default <model_dir>/figures.")
flags.DEFINE_integer("batch_size", 1000, "Evaluation batch size.")
flags.DEFINE_integer("seed", 0, "Seed of the evaluation's random choices.")
# cascade_vae evaluation settings: by default the run's own (its model.json), else tfssvae/configs/cascade_vae.py's.
flags.DEFINE_integer("eval_samples", None, "cascade_vae: examples for MIG, shape accuracy and FactorVAE's variances.")
flags.DEFINE_list("factor_vae_votes", None, "cascade_vae: FactorVAE training and evaluation votes.")
flags.DEFINE_integer("factor_vae_samples_per_value", None,
                     "cascade_vae: images per (factor, value) that FactorVAE votes draw from; 0: fresh images.")
flags.DEFINE_bool("learning_curve", False,
                  "cascade_vae: evaluate every checkpoint the run kept (keep_checkpoints=0 keeps them all) and "
                  "write learning_curve.json and learning_curve.png to --output_dir.")
flags.DEFINE_integer("curve_points", 10, "cascade_vae --learning_curve: evaluate this many checkpoints, evenly "
                     "spaced, the last included (0: all).")
FLAGS = flags.FLAGS


def fail(message):
    print(f"tfssvae-evaluate: error: {message}", file=sys.stderr)
    sys.exit(2)


def evaluate_saved_model(source):
    import tensorflow as tf

    if source is None:
        fail("--saved_model evaluates classifiers on image data, not --dataset=sprites; use --model_dir")
    from tfssvae import export

    inputs = export.serving_inputs(FLAGS.saved_model)  # ValueError where there is no tfssvae SavedModel
    if "classify" not in inputs:
        fail(f"{FLAGS.saved_model} has no classify signature (ML-VAE, CascadeVAE or multi-digit?); evaluate it "
             f"with --model_dir")
    classify = tf.saved_model.load(FLAGS.saved_model).signatures["classify"]
    expected = tuple(inputs["classify"]["images"]["shape"][1:])
    if expected != source.image_shape:
        fail(f"the model takes images of shape {expected}, {FLAGS.dataset} has {source.image_shape}")
    predicted = np.concatenate([
        classify(images=tf.constant(source.test_images[i:i + FLAGS.batch_size]))["class"].numpy()
        for i in range(0, len(source.test_images), FLAGS.batch_size)
    ])
    return {"saved_model": FLAGS.saved_model, "test_examples": len(predicted),
            "test_error": float(np.mean(predicted != source.test_labels))}


def run_config():
    """The resolved config the run in --model_dir was trained with (its model.json)."""
    with open(os.path.join(FLAGS.model_dir, "model.json")) as f:
        return json.load(f).get("run_config", {})


def figures_dir():
    """--output_dir, else <model_dir>/figures; created."""
    output_dir = FLAGS.output_dir or os.path.join(FLAGS.model_dir, "figures")
    os.makedirs(output_dir, exist_ok=True)
    return output_dir


def cascade_settings():
    """The cascade evaluation's settings: flags, else the run's config, else the package config."""
    from tfssvae import configs

    trained_with = run_config()
    package = configs.get("cascade_vae")
    settings = {key: trained_with.get(key, package[key])
                for key in ("eval_samples", "factor_vae_votes", "factor_vae_samples_per_value")}
    if FLAGS.eval_samples is not None:
        settings["eval_samples"] = FLAGS.eval_samples
    if FLAGS.factor_vae_votes is not None:
        try:
            settings["factor_vae_votes"] = [int(v) for v in FLAGS.factor_vae_votes]
        except ValueError:
            fail(f"--factor_vae_votes: expected two integers, received {','.join(FLAGS.factor_vae_votes)}")
    if FLAGS.factor_vae_samples_per_value is not None:
        settings["factor_vae_samples_per_value"] = FLAGS.factor_vae_samples_per_value
    if len(settings["factor_vae_votes"]) != 2:
        fail(f"--factor_vae_votes: expected training and evaluation votes, received {settings['factor_vae_votes']}")
    settings["factor_vae_votes"] = tuple(int(v) for v in settings["factor_vae_votes"])
    return settings


def cascade_learning_curve(model, settings):
    """The metric suite at every kept checkpoint of a CascadeVAE run, as JSON and a PNG."""
    import tensorflow as tf
    from tfssvae import evaluation, figures

    state = tf.train.get_checkpoint_state(os.path.join(FLAGS.model_dir, "checkpoints"))
    paths = list(state.all_model_checkpoint_paths) if state else []
    if not paths:
        fail(f"{FLAGS.model_dir}/checkpoints holds no checkpoint")
    if FLAGS.curve_points < 0:
        fail(f"--curve_points: expected 0 (all) or a positive number, received {FLAGS.curve_points}")
    if 0 < FLAGS.curve_points < len(paths):
        # Evenly spaced from the end, so the final weights are always a point.
        picks = np.round(np.linspace(len(paths) - 1, 0, FLAGS.curve_points)).astype(int)
        paths = [paths[i] for i in sorted(set(picks.tolist()))]
    points = []
    for i, path in enumerate(paths):
        tf.train.Checkpoint(model=model).restore(path).expect_partial().assert_existing_objects_matched()
        step = int(path.rsplit("-", 1)[-1])
        report = evaluation.cascade_report(model, FLAGS.seed, settings["eval_samples"], settings["factor_vae_votes"],
                                           settings["factor_vae_samples_per_value"])
        points.append({"step": step, **report})
        print(f"checkpoint {i + 1}/{len(paths)}, step {step}: FactorVAE {report['factor_vae_score']:.3f}, "
              f"MIG {report['mig']:.3f}, shape accuracy {report['shape_accuracy']:.3f}", file=sys.stderr)
    output_dir = figures_dir()
    with open(os.path.join(output_dir, "learning_curve.json"), "w") as f:
        json.dump(points, f, indent=2)
    chart = figures.line_chart(
        os.path.join(output_dir, "learning_curve.png"), [p["step"] for p in points],
        {"FactorVAE score": [p["factor_vae_score"] for p in points], "MIG": [p["mig"] for p in points],
         "shape accuracy of d": [p["shape_accuracy"] for p in points]},
        title=f"CascadeVAE {os.path.basename(os.path.normpath(FLAGS.model_dir))}: metrics against iterations")
    return {"model_dir": FLAGS.model_dir, "model": "cascade_vae", "learning_curve": points, "figure": chart}


def evaluate_multi_digit(name, model, source):
    """A multi-digit run's figures on its test canvases (``experiment.multi_digit_canvases`` with the run's
    settings, from ``source``'s test digits) and ``decomposition.png`` of the first of them."""
    import ml_collections
    from tfssvae import experiment
    from tfssvae.models import multi_digit

    config = ml_collections.ConfigDict(run_config())
    test = experiment.multi_digit_canvases(config, source, sets=("test",))["test"]
    figures = multi_digit.evaluate_canvases(model, test["x"], test["count"], test["boxes"], FLAGS.batch_size)
    figure = multi_digit.write_decomposition(model, test["x"][:experiment.DECOMPOSITION_CANVASES],
                                             os.path.join(figures_dir(), "decomposition.png"))
    return {"model_dir": FLAGS.model_dir, "model": name, "test_canvases": len(test["x"]),
            **{f"test_{key}": value for key, value in figures.items()}, "figures": [figure]}


def evaluate_run(source):
    from tfssvae import evaluation, export, figures, metrics, models

    name, model = export.restore_run(FLAGS.model_dir)
    if FLAGS.learning_curve and not isinstance(model, models.CascadeVAE):
        fail(f"--learning_curve is for cascade_vae runs; {FLAGS.model_dir} holds a {name} model")
    if isinstance(model, models.CascadeVAE):
        settings = cascade_settings()
        if FLAGS.learning_curve:
            return cascade_learning_curve(model, settings)
        return {"model_dir": FLAGS.model_dir, "model": name, **evaluation.cascade_report(
            model, FLAGS.seed, settings["eval_samples"], settings["factor_vae_votes"],
            settings["factor_vae_samples_per_value"], verbose=True)}
    if source is None:
        fail(f"--dataset=sprites is for cascade_vae runs; {FLAGS.model_dir} holds a {name} model")
    if isinstance(model, models.MultiDigitModel):  # reads canvases composed of the source's digits
        return evaluate_multi_digit(name, model, source)
    if model.data_shape != source.image_shape:
        fail(f"the model takes images of shape {model.data_shape}, {FLAGS.dataset} has {source.image_shape}")
    if model.has_classifier:
        return {"model_dir": FLAGS.model_dir, "model": name,
                "test_error": metrics.classification_error(model, source.test_images, source.test_labels)}
    held_out = tuple(run_config().get("held_out_classes", ()))
    report = {"model_dir": FLAGS.model_dir, "model": name,
              **evaluation.mlvae_report(model, source, FLAGS.seed, held_out_classes=held_out)}
    output_dir = figures_dir()

    def encode(images):
        code = model.encode(images)
        return code["content_mean"].numpy(), code["style_mean"].numpy()

    def generate(content, style):
        return model.generate(content, style)["images"].numpy()

    rng = np.random.default_rng(FLAGS.seed)
    # One test image of each of the first eight classes: content differs along rows and columns.
    picks = [rng.choice(np.flatnonzero(source.test_labels == c)) for c in range(min(8, source.num_classes))]
    images = source.test_images[picks]
    report["figures"] = [
        figures.save_png(os.path.join(output_dir, "swap.png"), figures.tile(figures.swap_grid(encode, generate, images))),
        figures.save_png(os.path.join(output_dir, "interpolation.png"),
                         figures.tile(figures.interpolation(encode, generate, images[0], images[1]))),
    ]
    # Content and style of up to 2,000 test images on their first two principal axes, coloured by class.
    shown = rng.permutation(len(source.test_images))[:2000]
    content, style = encode(source.test_images[shown])
    report["figures"].append(figures.pca_scatter(os.path.join(output_dir, "pca.png"),
                                                 {"content": content, "style": style}, source.test_labels[shown]))
    return report


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from tfssvae import data as data_lib

    if (FLAGS.saved_model is None) == (FLAGS.model_dir is None):
        fail("give exactly one of --saved_model and --model_dir")
    try:
        # cascade_vae evaluates on procedural sprites it renders itself.
        source = None if FLAGS.dataset == "sprites" else data_lib.load_source(FLAGS.dataset, FLAGS.data_dir)
        report = evaluate_saved_model(source) if FLAGS.saved_model else evaluate_run(source)
    except ValueError as error:
        fail(error)
    print(json.dumps({"dataset": FLAGS.dataset, **report}, indent=2))


def run():
    app.run(main)


if __name__ == "__main__":
    run()
