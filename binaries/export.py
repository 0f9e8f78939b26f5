r"""Exports the latest checkpoint of a training run as a new SavedModel version.

  python -m binaries.export --model_dir=runs/m2_digits_100labels_seed0 --export_dir=saved_models
"""
import sys

from absl import app, flags, logging

flags.DEFINE_string("model_dir", None, "A model directory written by tfssvae-train.")
flags.DEFINE_string("export_dir", "saved_models", "SavedModels go to <export_dir>/<model>/<version>.")
flags.mark_flag_as_required("model_dir")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from tfssvae import export

    try:
        path = export.export_run(FLAGS.model_dir, FLAGS.export_dir)
    except (ValueError, OSError) as error:
        print(f"tfssvae-export: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"SavedModel: {path}")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
