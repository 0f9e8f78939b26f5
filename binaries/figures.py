r"""Writes class/style PNG grids and analogies from an exported SavedModel.

  python -m binaries.figures --saved_model=saved_models/ssdgm_mnist/1 --dataset=digits --output_dir=figures
"""
import os
import sys

from absl import app, flags, logging

flags.DEFINE_string("saved_model", None, "A SavedModel with 'encode' and 'generate' signatures (M2, ssdgm; "
                    "CascadeVAE: traversals only).")
flags.DEFINE_string("dataset", "digits", "Source of the real images used for analogies.")
flags.DEFINE_string("data_dir", None, "TFDS data directory for 'tfds:' sources.")
flags.DEFINE_string("output_dir", "figures", "Where the PNGs go.")
flags.DEFINE_integer("num_styles", 8, "Rows of the class/style grid.")
flags.DEFINE_integer("num_analogies", 8, "Test images in the analogy grid.")
flags.DEFINE_integer("seed", 0, "Seed of the styles drawn from the prior.")
flags.DEFINE_integer("class_effect_images", 1000, "Test images for the class-effect numbers printed with the analogies.")
flags.mark_flag_as_required("saved_model")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    import tensorflow as tf

    from tfssvae import data as data_lib
    from tfssvae import export, figures

    try:
        signature = export.serving_inputs(FLAGS.saved_model)["generate"]
    except ValueError as error:
        print(f"tfssvae-figures: error: {error}", file=sys.stderr)
        sys.exit(2)
    loaded = tf.saved_model.load(FLAGS.saved_model)
    if "d" in signature:  # CascadeVAE: traversals of every continuous dimension, a row block per d
        latent_dim = signature["latent"]["shape"][-1]
        discrete_size = signature["d"]["range"][1]

        def generate_cascade(latent, d):
            return loaded.signatures["generate"](latent=tf.constant(latent), d=tf.constant(d))["images"].numpy()

        os.makedirs(FLAGS.output_dir, exist_ok=True)
        grid = figures.traversal(generate_cascade, latent_dim, discrete_size)
        print(figures.save_png(os.path.join(FLAGS.output_dir, "traversal.png"), figures.tile(grid)))
        return
    if "labels" not in signature:
        print("tfssvae-figures: error: the model's generate signature takes no class labels; "
              "class/style figures need a model with a class (m2, m1m2, ssdgm_*)", file=sys.stderr)
        sys.exit(2)
    latent_dim = signature["latent"]["shape"][-1]
    num_classes = loaded.signatures["classify"].structured_outputs["probabilities"].shape[-1]

    def generate(labels, latent):
        return loaded.signatures["generate"](labels=tf.constant(labels), latent=tf.constant(latent))["images"].numpy()

    def encode(images):
        return loaded.signatures["encode"](images=tf.constant(images))["mean"].numpy()

    os.makedirs(FLAGS.output_dir, exist_ok=True)
    grid = figures.class_style_grid(generate, num_classes, latent_dim, FLAGS.num_styles, FLAGS.seed)
    print(figures.save_png(os.path.join(FLAGS.output_dir, "class_style.png"), figures.tile(grid)))
    test_images = data_lib.load_source(FLAGS.dataset, FLAGS.data_dir).test_images
    images = test_images[:FLAGS.num_analogies]
    grid = figures.analogies(encode, generate, images, num_classes)
    print(figures.save_png(os.path.join(FLAGS.output_dir, "analogies.png"), figures.tile(grid)))

    def encode_with_class(images):
        out = loaded.signatures["encode"](images=tf.constant(images))
        return out["mean"].numpy(), out["class"].numpy()

    test_images = test_images[:FLAGS.class_effect_images]
    effect = figures.class_effect(encode_with_class, generate, test_images, num_classes)
    print(f"class effect on {len(test_images)} test images: log p(x | its class, z) is {effect['gap_nats']:.2f} "
          f"nats above the other classes' mean; its class renders it best for "
          f"{100 * effect['own_class_best']:.1f} % of them")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
