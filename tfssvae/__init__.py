"""tfssvae: semi-supervised and disentangled deep generative models for TensorFlow/Keras."""

__version__ = "0.1.0"
