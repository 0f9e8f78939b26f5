"""The machine's ceiling for the speed benchmarks: its matmul rate and a network's FLOPs."""
import time

import keras
import numpy as np
import tensorflow as tf


def matmul_gflops(dtype, size=2048, repeats=20):
    """Measured rate of a [size, size] x [size, size] matmul in ``dtype``, GFLOP/s."""
    a = tf.cast(tf.random.normal([size, size], dtype=tf.float32), dtype)
    product = tf.function(lambda a: tf.matmul(a, a))
    product(a).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        out = product(a)
    out.numpy()
    return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9


def forward_macs(model):
    """Multiply-accumulates of one example through the Dense, Conv2D and Conv2DTranspose layers
    of a built functional ``keras.Model`` (nested models included)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += forward_macs(layer)
        elif isinstance(layer, keras.layers.Conv2DTranspose):  # every input pixel scatters a kernel
            _, h, w, channels = layer.input.shape
            total += h * w * channels * int(np.prod(layer.kernel.shape[:2])) * layer.filters
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, filters = layer.output.shape
            total += h * w * filters * int(np.prod(layer.kernel.shape[:3]))
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return total
