"""Variational objectives shared by every model.

There is one evidence lower bound (``elbo``).  The M2 bounds of Kingma et al. (2014)
are the same bound with the class variable either observed (a one-hot weight) or
summed out exactly under q(y | x) (``marginalise_classes``); both go through
``class_weights`` so labelled and unlabelled examples share one code path and are
selected per example by a mask, never by Python branching.
"""
import math

import tensorflow as tf


def elbo(log_likelihood, kl_terms):
    """Evidence lower bound per example: log-likelihood minus the sum of KL terms.

    Args:
      log_likelihood: float tensor, any shape S (e.g. ``[batch]`` or
        ``[batch, num_classes]``): log p(x | latents) at a sample of the latents,
        plus any log-prior of observed variables.
      kl_terms: a sequence of float tensors of shape S, one per latent variable.

    Returns:
      float tensor of shape S.
    """
    bound = log_likelihood
    for kl in kl_terms:
        if kl.shape.rank is not None and bound.shape.rank is not None and kl.shape.rank != bound.shape.rank:
            raise ValueError(
                f"elbo: every KL term must have the log-likelihood's shape {bound.shape}, "
                f"received a KL term of shape {kl.shape}"
            )
        bound = bound - kl
    return bound


def class_weights(class_logits, labels, label_mask):
    """Per-example weights over classes: one-hot where the label is observed, q(y | x) elsewhere.

    Args:
      class_logits: float ``[batch, num_classes]``, logits of q(y | x).
      labels: int ``[batch]``; ignored where ``label_mask`` is False.
      label_mask: bool ``[batch]``, True where the label is observed.

    Returns:
      float ``[batch, num_classes]``, rows summing to one.
    """
    num_classes = class_logits.shape[-1]
    observed = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=class_logits.dtype)
    inferred = tf.nn.softmax(class_logits, axis=-1)
    return tf.where(tf.cast(label_mask, tf.bool)[:, None], observed, inferred)


def marginalise_classes(class_bounds, weights):
    """Sum a per-class bound over the class under ``weights``, plus their entropy.

    With ``weights = q(y | x)`` this is the unlabelled M2 bound
    U(x) = sum_y q(y | x) L(x, y) + H(q(y | x)); with one-hot weights it is the
    labelled bound L(x, y) (a one-hot distribution has zero entropy).

    Args:
      class_bounds: float ``[batch, num_classes]``, L(x, y = k) for every k.
      weights: float ``[batch, num_classes]``, rows summing to one.

    Returns:
      float ``[batch]``.
    """
    if class_bounds.shape.rank != 2 or weights.shape.rank != 2:
        raise ValueError(
            "marginalise_classes: class_bounds and weights must be [batch, num_classes], "
            f"received {class_bounds.shape} and {weights.shape}"
        )
    # xlogy makes 0 * log 0 = 0, so one-hot weights contribute no entropy (and no NaN).
    entropy = -tf.reduce_sum(tf.math.xlogy(weights, weights), axis=-1)
    return tf.reduce_sum(weights * class_bounds, axis=-1) + entropy


def uniform_log_prior(num_classes):
    """log p(y) for the uniform class prior of M2."""
    return -math.log(num_classes)


def masked_mean(values, mask):
    """Mean of ``values[batch]`` over the examples where ``mask[batch]`` is True (0 if none)."""
    mask = tf.cast(mask, values.dtype)
    return tf.reduce_sum(values * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)
