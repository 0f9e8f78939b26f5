r"""Trains a tfssvae model, prints its test error and exports a SavedModel.

  python -m binaries.train --config=tfssvae/configs/m2.py --config.num_labels=100 --config.epochs=60
  python -m binaries.train --config=tfssvae/configs/m2.py:fashion_mnist --config.model.latent_dim=20
  tfssvae-train --config=m1m2:fashion_mnist --config.m1_epochs=5

``--config`` is a config file (``tfssvae/configs/*.py``, or one of your own) with an
optional ``:variant``; where no such file exists, the name of a package config (``m2``,
``m2.py``) is looked up in the installed package.  Every field of the config can be
overridden with ``--config.<field>=value`` (``--config.model.<argument>`` for the model's
constructor arguments; tuples as ``--config.model.hidden_units='(256, 256)'``), after
``--config``.  ``--flagfile`` reads any of these from a file.  Rerunning the same command
resumes from the last checkpoint in ``model_dir``.
"""
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from tfssvae import configs


_OVERRIDE = re.compile(r"^--?(?:no)?config\.([^=]+)")
_argv = None  # the command line being parsed (parse_flags sets it; sys.argv otherwise)


def _check_overrides(config, argv):
    """A ValueError for a --config.<field> override of a field the config does not have
    (config_flags would fail with a bare AttributeError)."""
    for arg in flags.FLAGS.read_flags_from_files(argv, force_gnu=False):
        match = _OVERRIDE.match(arg)
        if not match:
            continue
        node, path = config, []
        for part in match.group(1).split("."):
            key = part.split("[")[0]
            if not (hasattr(node, "keys") and key in node.keys()):
                where = f"config.{'.'.join(path)}" if path else "config"
                fields = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "none (it is a value)"
                raise ValueError(f"--config.{match.group(1)}: {where} has no field {key!r}; its fields: {fields}")
            node, path = node[key], path + [key]


class _ConfigParser(flags.ArgumentParser):
    """Loads ``path[:variant]`` with ``configs.load`` (in place of config_flags' own file parser):
    package names where no file exists, and a missing file, a missing ``get_config``, an
    unknown variant or an override of a field that does not exist as a one-line ValueError
    rather than a deferred error or a traceback."""

    def parse(self, argument):
        config = configs.load(argument)
        _check_overrides(config, sys.argv if _argv is None else _argv)
        config.lock()
        return config

    def flag_type(self):
        return "config object"


# No default here: config_flags would load it at import, before parse_flags can report errors.
_CONFIG = config_flags.DEFINE_config_file(
    "config", None,
    "Config file with an optional ':variant', e.g. tfssvae/configs/m2.py:fashion_mnist (package configs: "
    f"{', '.join(configs.NAMES)}; default m2, on the embedded digits); override fields with "
    "--config.<field>=value.")
flags.FLAGS["config"].parser = _ConfigParser()
DEFAULT_CONFIG = configs.path("m2")

FLAGS = flags.FLAGS


def fail(message):
    print(f"tfssvae-train: error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv):
    """absl's parsing, with bad flags (a bad config file, variant, field or value) reported in
    one line and exit status 2 instead of a traceback."""
    global _argv
    _argv = argv
    try:
        # Loads the default config unless --config is given (then only records it as the default).
        FLAGS.set_default("config", DEFAULT_CONFIG)
        return FLAGS(argv)
    except flags.Error as error:
        fail(error)


def main(argv):
    # TensorFlow's INFO lines (checkpoint sharding, asset writing) drown the progress bar.
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        fail(f"unexpected arguments: {argv[1:]}; fields are set with --config.<field>=value")
    from tfssvae import experiment

    try:
        experiment.run(_CONFIG.value)
    except (ValueError, OSError) as error:
        # Bad settings or bad data, or a directory that cannot be written (a read-only file
        # system passes the writability check for root): say what is wrong, without a traceback.
        fail(error)


def run():
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
