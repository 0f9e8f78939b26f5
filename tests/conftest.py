"""Test set-up: quiet TensorFlow, CPU only, so tests never depend on a GPU."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
