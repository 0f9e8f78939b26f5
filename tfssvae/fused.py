"""Fused kernels for the hottest elementwise work of a training step.

Without them TensorFlow makes one pass over memory per op: softplus in the forward pass
(its CPU kernel evaluates exp, log and two selects), then sigmoid again for the gradient in
the backward pass.  Here one XLA-fused pass computes the value and its derivative together,
and the backward pass is a single multiply.  Measured on the M2 step (2,100 rows of 784
pixels and 500 hidden units, benchmarks/RESULTS.md): 6 to 11 % off a bfloat16 step, where
the kernels also convert to and from bfloat16 inside the fused pass; in float32 about
even with TensorFlow's own kernels.

Use ``softplus`` while training only: ``networks.Softplus`` does, so serving graphs keep
plain TensorFlow ops that every runtime, TF Serving included, runs without XLA.  The
Bernoulli log-density is never part of a serving signature, so it always uses its kernel.
The kernels give first derivatives only: a gradient of their gradient is not the
second derivative (nothing in this package takes one).

``Adam`` is Keras' Adam with each variable's update done by TensorFlow's fused
``ResourceApplyAdam`` kernel (one pass over the variable and its two moments) instead of
about ten separate ops, the same arithmetic.
"""
import keras
import tensorflow as tf


@tf.function(jit_compile=True)
def _softplus_and_derivative(a):
    # float32 arithmetic whatever the storage type: bfloat16 transcendentals are slow on
    # CPUs, and inside one XLA kernel the conversions cost no extra pass over memory.
    a32 = tf.cast(a, tf.float32)
    return tf.cast(tf.nn.softplus(a32), a.dtype), tf.cast(tf.sigmoid(a32), a.dtype)


@tf.function(jit_compile=True)
def _times(upstream, derivative):
    return tf.cast(tf.cast(upstream, tf.float32) * tf.cast(derivative, tf.float32), upstream.dtype)


@tf.custom_gradient
def softplus(a):
    """softplus(a), elementwise, in the dtype of ``a`` (float32 or bfloat16; computed in float32).

    Its derivative sigmoid(a) comes from the same fused pass and is kept for the backward pass.
    """
    value, derivative = _softplus_and_derivative(a)
    return value, lambda upstream: _times(upstream, derivative)


@tf.function(jit_compile=True)
def _bernoulli_and_derivative(x, logits):
    return x * logits - tf.nn.softplus(logits), x - tf.sigmoid(logits)


@tf.custom_gradient
def bernoulli_log_prob(x, logits):
    """log Bernoulli(x | sigmoid(logits)) = x * logits - softplus(logits), elementwise.

    ``x`` may be grey levels in [0, 1] (minus the sigmoid cross-entropy).  The derivative
    in the logits, x - sigmoid(logits), comes from the same fused pass; the one in x is logits.
    """
    value, d_logits = _bernoulli_and_derivative(x, logits)
    return value, lambda upstream: (upstream * logits, upstream * d_logits)


@tf.function(jit_compile=True)
def _bernoulli_sum_and_derivative(x, logits):
    logits32 = tf.cast(logits, tf.float32)
    x = tf.cast(x, tf.float32)
    return (tf.reduce_sum(x * logits32 - tf.nn.softplus(logits32), axis=-1),
            tf.cast(x - tf.sigmoid(logits32), logits.dtype))


@tf.function(jit_compile=True)
def _rows_times(upstream, derivative):
    return tf.cast(upstream[:, None] * tf.cast(derivative, tf.float32), derivative.dtype)


@tf.custom_gradient
def bernoulli_log_prob_sum(x, logits):
    """sum_i x_i * l_i - softplus(l_i) over the last axis: ``[rows, n]`` -> float32 ``[rows]``.

    The log-density of independent Bernoulli pixels, summed as ``tfd.Independent`` does,
    in one fused pass: ``logits`` may be bfloat16 (converted inside the kernel, and its
    gradient is returned in bfloat16, so no separate conversion passes), and the backward
    pass is one kernel scaling the stored derivative x - sigmoid(l) by each row's upstream
    gradient.  ``x`` is data: it gets no gradient.
    """
    value, d_logits = _bernoulli_sum_and_derivative(x, logits)
    return value, lambda upstream: (None, _rows_times(upstream, d_logits))


@keras.saving.register_keras_serializable(package="tfssvae")
class Adam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` whose update is one fused TensorFlow kernel per variable.

    The same update as Keras' (m and v moving averages, bias correction folded into the
    step size, epsilon added to sqrt(v)); ``amsgrad`` falls back to Keras' own update.
    """

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].handle, v=self._velocities[index].handle,
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype))
