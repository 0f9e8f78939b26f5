"""tfssvae: semi-supervised and disentangled deep generative models in TensorFlow/Keras."""
import setuptools

setuptools.setup(
    name="tfssvae",
    version="0.1.0",
    description=(
        "Semi-supervised and disentangled VAEs (M1/M2, partially-specified graphical "
        "models, ML-VAE, CascadeVAE) for TensorFlow 2 and Keras 3."
    ),
    packages=setuptools.find_packages(include=["tfssvae", "tfssvae.*", "binaries"]),
    python_requires=">=3.10",
    # Tested: TF 2.18.1 with Keras 3.12, tf-keras 2.18 and TFDS 4.9.7 (this machine, CI);
    # and TF 2.21.0 with Keras 3.15.1, tf-keras 2.21, TFDS 4.9.10 and protobuf 7 (a fresh
    # venv, the whole suite passing); TFP 0.25.0 with both.  The upper bounds stop at the
    # newest tested releases.  TFP needs tf-keras to import even though every model here is
    # Keras 3.  tensorflow-metadata 1.18+ is built for protobuf 6, which TF 2.18 does not
    # allow, so it is held back.
    install_requires=[
        "tensorflow>=2.18,<2.22",
        "tf-keras>=2.18,<2.22",
        "tensorflow-probability[tf]==0.25.0",
        "keras>=3.6,<3.16",
        "tensorboard>=2.18",  # TensorBoard to read the events every run writes
        "tensorflow-datasets>=4.9.7,<4.10",
        "tensorflow-metadata<1.18",
        # TFDS reads through etils.epath, which imports importlib_resources without
        # declaring it ("tfds:" sources fail to import without it); sprites use epath too.
        "etils[epath]>=1.5",
        "importlib_resources>=5.0",
        "networkx>=3.0",
        "absl-py>=1.0",
        "ml_collections>=1.0",
        "scikit-learn>=1.3",
        "scipy>=1.10",  # the matching metric's linear_sum_assignment
        "numpy",
        "pillow",
        "tqdm",
        # The PredictionLog/PredictRequest protos of the TF Serving warm-up file every export
        # writes.  Pinned: a range would let pip take the newest (2.21), which needs TF 2.21 and
        # would upgrade an installed TF 2.18 on a machine set up before.  2.18.0 caps protobuf
        # below 6, so a fresh install now resolves to TF 2.20 with protobuf 5 (pip --dry-run).
        "tensorflow-serving-api==2.18.0",
    ],
    extras_require={"test": ["pytest>=7"]},
    entry_points={
        "console_scripts": [
            "tfssvae-train=binaries.train:run",
            "tfssvae-evaluate=binaries.evaluate:run",
            "tfssvae-export=binaries.export:run",
            "tfssvae-figures=binaries.figures:run",
        ]
    },
)
