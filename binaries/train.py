r"""Trains a tfssvae model, prints its test error and exports a SavedModel.

  python -m binaries.train --model=m2 --dataset=digits --num_labels=100 --epochs=60
  tfssvae-train --model=m1m2 --dataset=idx:/usr/share/datasets/fashion-mnist --num_labels=100

Rerunning the same command resumes from the last checkpoint in --model_dir.
"""
import dataclasses
import sys

from absl import app, flags, logging

from tfssvae import experiment, models

_DEFAULTS = experiment.Settings()

flags.DEFINE_string("model", _DEFAULTS.model, f"Model family to train: one of {sorted(models.MODELS)}.")
flags.DEFINE_string(
    "dataset", _DEFAULTS.dataset,
    "Data source: 'digits' (embedded), 'idx:/path/to/mnist-format-dir', 'tfds:<name>', or 'sprites' "
    "(procedural dSprites, for cascade_vae).",
)
flags.DEFINE_string("data_dir", None, "TFDS data directory for 'tfds:' sources.")
flags.DEFINE_integer("num_labels", _DEFAULTS.num_labels, "Labelled training examples, balanced over classes.")
flags.DEFINE_integer("validation_size", _DEFAULTS.validation_size,
                     "Held-out training examples for validation; -1: a tenth, at most 5,000.")
flags.DEFINE_integer("epochs", _DEFAULTS.epochs, "Passes over the training images.")
flags.DEFINE_integer("m1_epochs", _DEFAULTS.m1_epochs, "M1+M2 only: epochs of the M1 stage.")
flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Examples per batch, labelled ones included.")
flags.DEFINE_integer("labelled_batch_size", _DEFAULTS.labelled_batch_size,
                     "Labelled examples per batch; -1: half the batch, at most num_labels.")
flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate, "Adam learning rate.")
flags.DEFINE_float("alpha", _DEFAULTS.alpha,
                   "Weight of log q(y|x) on labelled data, scaled by N_total / N_labelled.")
flags.DEFINE_float("gamma", _DEFAULTS.gamma, "ssdgm: weight of the supervised examples' bounds.")
flags.DEFINE_integer("num_samples", _DEFAULTS.num_samples, "ssdgm: S, importance samples of z per example.")
flags.DEFINE_enum("variant", _DEFAULTS.variant, ["weighted", "iw"],
                  "ssdgm: the paper's weighted estimator or the log-mean-exp (importance-weighted) bound.")
flags.DEFINE_enum("discrete", _DEFAULTS.discrete, ["enumerate", "relax"],
                  "ssdgm: sum the latent class out exactly or sample it from the Concrete relaxation.")
flags.DEFINE_float("temperature", _DEFAULTS.temperature, "ssdgm: Concrete temperature.")
flags.DEFINE_integer("discrete_size", _DEFAULTS.discrete_size, "cascade_vae: values of the discrete code.")
flags.DEFINE_float("beta_h", _DEFAULTS.beta_h, "cascade_vae: KL weight of penalised dimensions.")
flags.DEFINE_float("beta_l", _DEFAULTS.beta_l, "cascade_vae: KL weight of relieved dimensions.")
flags.DEFINE_integer("relieve_every", _DEFAULTS.relieve_every, "cascade_vae: iterations between relieving dims.")
flags.DEFINE_integer("assign_start", _DEFAULTS.assign_start, "cascade_vae: iteration the assignment starts.")
flags.DEFINE_float("pair_penalty", _DEFAULTS.pair_penalty, "cascade_vae: cost per pair sharing a code value.")
flags.DEFINE_enum("solver", _DEFAULTS.solver, ["fast", "networkx"], "cascade_vae: min-cost-flow solver.")
flags.DEFINE_integer("steps_per_epoch", _DEFAULTS.steps_per_epoch, "cascade_vae: steps per epoch of endless sprites.")
flags.DEFINE_integer("eval_samples", _DEFAULTS.eval_samples, "cascade_vae: examples for MIG / shape accuracy.")
flags.DEFINE_list("factor_vae_votes", [str(v) for v in _DEFAULTS.factor_vae_votes],
                  "cascade_vae: FactorVAE training and evaluation votes.")
flags.DEFINE_integer("content_dim", _DEFAULTS.content_dim, "mlvae: size of the group content.")
flags.DEFINE_integer("style_dim", _DEFAULTS.style_dim, "mlvae: size of the per-observation style.")
flags.DEFINE_integer("groups_per_batch", _DEFAULTS.groups_per_batch, "mlvae: groups in a batch.")
flags.DEFINE_integer("group_size", _DEFAULTS.group_size, "mlvae: members of a group (largest, if variable).")
flags.DEFINE_bool("variable_group_sizes", _DEFAULTS.variable_group_sizes, "mlvae: group sizes drawn from 1..K.")
flags.DEFINE_enum("group_method", _DEFAULTS.group_method, ["product", "average", "geometric"],
                  "mlvae: how member posteriors combine into the group content.")
flags.DEFINE_bool("include_prior", _DEFAULTS.include_prior, "mlvae: the prior as one more factor of the group.")
flags.DEFINE_bool("content_per_observation", _DEFAULTS.content_per_observation,
                  "mlvae: sample the group content once per member instead of once per group.")
flags.DEFINE_integer("latent_dim", _DEFAULTS.latent_dim,
                     "Size of the continuous latent (default 50; cascade_vae 6).")
flags.DEFINE_list("hidden_units", [str(h) for h in _DEFAULTS.hidden_units], "Hidden layer widths.")
flags.DEFINE_string("activation", _DEFAULTS.activation, "Hidden activation.")
flags.DEFINE_enum("likelihood", _DEFAULTS.likelihood, ["bernoulli", "gaussian"], "Pixel likelihood.")
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed of the label split, batch order and initialisation.")
flags.DEFINE_bool("jit_compile", _DEFAULTS.jit_compile, "Compile the training step with XLA.")
flags.DEFINE_integer("checkpoint_every", _DEFAULTS.checkpoint_every, "Steps between checkpoints.")
flags.DEFINE_string("model_dir", None,
                    "Checkpoints, TensorBoard and metrics.json; default runs/<model>_<dataset>_<labels>labels_seed<seed>.")
flags.DEFINE_string("export_dir", _DEFAULTS.export_dir, "SavedModels go to <export_dir>/<model>/<version>.")
flags.DEFINE_bool("export", _DEFAULTS.export, "Export a SavedModel at the end.")
flags.DEFINE_integer("verbose", _DEFAULTS.verbose, "0: quiet, 1: progress bars.")

FLAGS = flags.FLAGS


def main(argv):
    # TensorFlow's INFO lines (checkpoint sharding, asset writing) drown the progress bar.
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    values = {field.name: FLAGS[field.name].value for field in dataclasses.fields(experiment.Settings)}
    values["hidden_units"] = tuple(int(h) for h in values["hidden_units"])
    values["factor_vae_votes"] = tuple(int(v) for v in values["factor_vae_votes"])
    try:
        experiment.run(experiment.Settings(**values))
    except ValueError as error:
        # Bad flags or bad data: say what is wrong, without a traceback.
        print(f"tfssvae-train: error: {error}", file=sys.stderr)
        sys.exit(2)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
