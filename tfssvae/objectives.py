"""Variational objectives shared by every model.

There is one evidence lower bound (``elbo``).  The M2 bounds of Kingma et al. (2014)
are the same bound with the class variable either observed or summed out exactly under
q(y | x) (``marginalise_classes``): ``class_rows`` lays out one row per (example, class)
pair that is needed (all K classes for an unlabelled example, its own class for a
labelled one) and ``enumerated_bound`` folds the rows back into one bound per example.
Labelled and unlabelled examples are selected per example by a mask, never by Python
branching.
"""
import math
import typing

import tensorflow as tf
import tensorflow_probability as tfp

from tfssvae import graph

tfd = tfp.distributions


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


class ClassRows(typing.NamedTuple):
    """Which (example, class) pairs an enumerated bound is computed for.

    ``example`` int32 [rows] and ``label`` int32 [rows] name each row; the first
    ``len(unlabelled) * num_classes`` rows are the unlabelled examples, each once per class
    (example-major), the rest the labelled examples, once each with their own label.
    ``unlabelled`` int32 [U] and ``labelled`` int32 [L] are the batch positions of each kind.
    """

    example: tf.Tensor
    label: tf.Tensor
    unlabelled: tf.Tensor
    labelled: tf.Tensor
    num_classes: int


def class_rows(labels, label_mask, num_classes):
    """The rows of M2's enumerated bound: every class for unlabelled examples, the label for labelled ones.

    Args:
      labels: int ``[batch]``; read only where ``label_mask`` is True.
      label_mask: bool ``[batch]``, True where the label is observed.
      num_classes: K.

    Returns:
      ``ClassRows`` with ``U * K + L`` rows for U unlabelled and L labelled examples.
    """
    mask = tf.cast(label_mask, tf.bool)
    unlabelled = tf.cast(tf.where(tf.logical_not(mask))[:, 0], tf.int32)
    labelled = tf.cast(tf.where(mask)[:, 0], tf.int32)
    every_class = tf.tile(tf.range(num_classes, dtype=tf.int32), [tf.size(unlabelled)])
    return ClassRows(
        example=tf.concat([tf.repeat(unlabelled, num_classes), labelled], axis=0),
        label=tf.concat([every_class, tf.gather(tf.cast(labels, tf.int32), labelled)], axis=0),
        unlabelled=unlabelled,
        labelled=labelled,
        num_classes=int(num_classes),
    )


def enumerated_bound(row_values, class_logits, rows, entropy=True):
    """Per-example bound from per-row values: L(x, y) for labelled examples, U(x) for the others.

    Args:
      row_values: float ``[rows]``, L(x, y) (or any per-row term) for the rows of ``rows``.
      class_logits: float ``[batch, K]``, logits of q(y | x).
      rows: ``ClassRows``.
      entropy: add H(q(y | x)) to the unlabelled examples' expectation (True for the
        bound itself, False to report one of its terms under q(y | x)).

    Returns:
      float ``[batch]``.
    """
    K = rows.num_classes
    enumerated = tf.size(rows.unlabelled) * K
    per_class = tf.reshape(row_values[:enumerated], [-1, K])
    q = tf.nn.softmax(tf.gather(class_logits, rows.unlabelled), axis=-1)
    if entropy:
        unlabelled = marginalise_classes(per_class, q)
    else:
        unlabelled = tf.reduce_sum(q * per_class, axis=-1)
    positions = tf.concat([rows.unlabelled, rows.labelled], axis=0)[:, None]
    # Back to batch order: unlabelled examples from their K rows, labelled ones from their own row.
    return tf.scatter_nd(positions, tf.concat([unlabelled, row_values[enumerated:]], axis=0),
                         tf.shape(class_logits)[:1])


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


VARIANTS = ("weighted", "iw")


def tile_rows(tensor, copies):
    """``[batch, ...]`` -> ``[copies * batch, ...]``, row ``c * batch + b`` holding example b."""
    tensor = tf.convert_to_tensor(tensor)
    return tf.tile(tensor, tf.concat([[copies], tf.ones([tf.rank(tensor) - 1], tf.int32)], axis=0))


def latent_log_ratio(q, p, analytic_kl=True, kl_weights=None):
    """log p - log q of the latent variables of two traces, ``[rows]``, with analytic KLs where they exist.

    For a variable that is latent in ``q`` (never observed) and whose pair of densities
    has a registered ``tfd.kl_divergence`` (Normal against Normal, ...), the single-sample
    ``log p(v) - log q(v)`` is replaced by its expectation ``-KL(q(v) || p(v))``: the same
    bound in expectation, with less variance (this is how M2's bound treats z).
    ``kl_weights`` ({name: beta}) multiplies such a variable's KL by beta (a beta-VAE's
    weight; 1 is the bound); a weighted variable must have an analytic KL.
    """
    kl_weights = dict(kl_weights or {})
    log_ratio = p.log_prob_sum() - q.log_prob_sum()
    if not analytic_kl:
        if kl_weights:
            raise ValueError(f"kl_weights: {sorted(kl_weights)} need the analytic KL (analytic_kl=True, the "
                             f"weighted variant)")
        return log_ratio
    for name, record in q.records.items():
        if record.kind != "latent" or name not in p:
            continue
        try:
            kl = tfd.kl_divergence(record.distribution, p.records[name].distribution)
        except NotImplementedError:
            if name in kl_weights:
                raise ValueError(f"kl_weights: {name!r} has no analytic KL to weight") from None
            continue
        log_ratio = log_ratio - (p.records[name].log_prob - record.log_prob) - kl_weights.pop(name, 1.0) * kl
    if kl_weights:
        raise ValueError(f"kl_weights: {sorted(kl_weights)} are not latent variables of both traces")
    return log_ratio


def partially_supervised_bound(encode, decode, x, supervision=None, num_samples=1, alpha=0.1,
                               variant="weighted", enumerate=None, temperature=0.66, analytic_kl=True,
                               kl_weights=None):
    """The semi-supervised objective of Siddharth et al. (2017) for any encoder/decoder graph.

    Every example is drawn ``num_samples`` times (times K if a discrete variable is
    enumerated): rows are copies of the batch.  With log-weights
    ``log w = sum of log q(v | ...)`` over the variables *observed* for that example
    (zero for an unsupervised one; w = q(y, z | x) / q(z | x, y) for a supervised y) and
    averaging weights ``a`` (uniform over samples; q(y = k | x) over an enumerated y),

      weighted:  L = sum_s softmax(log a + log w)_s [log p(x, y, z_s) - log q(y, z_s | x)]
                     + (1 + alpha) log q^(y | x)
      iw:        L = log sum_s a_s w_s p(x, y, z_s) / q(y, z_s | x) + alpha log q^(y | x)

    with log q^(y | x) = log sum_s a_s w_s, the importance-sampled estimate of log q(y | x),
    which is zero for unsupervised examples.  For an unsupervised example the weighted
    variant is the ordinary ELBO log p - log q averaged over samples (or summed under
    q(y | x) over an enumerated y: M2's U(x)); one formula, no branching on labels.

    Args:
      encode: ``encode(q, x)`` draws the recognition model's variables into trace q.
      decode: ``decode(p, x)`` draws/scores the generative model's variables into p
        (conditioned on q) and ``observe``s x.
      x: ``[batch, ...]`` data.
      supervision: ``{name: (value [batch, ...], mask bool [batch])}``.
      num_samples: S >= 1.
      alpha: weight of the classifier term.
      variant: ``"weighted"`` (the paper's estimator) or ``"iw"`` (log-mean-exp).
      enumerate: ``(name, K)`` to sum a discrete variable out exactly instead of relaxing it.
      temperature: Concrete temperature of relaxed discrete variables.
      analytic_kl: in the weighted variant, use KL(q || p) in closed form for latent
        variables whose pair of densities has one (``latent_log_ratio``); the iw variant
        needs the sampled density ratio and always uses it.
      kl_weights: ``{name: beta}`` weights of latent variables' analytic KLs
        (``latent_log_ratio``); None: the bound.

    Returns:
      dict of ``[batch]`` tensors: ``bound``, ``classification`` (log q^(y | x)),
      ``supervised`` (bool: some variable observed), ``log_likelihood`` (the weighted
      log-density of observed data), plus the traces ``q`` and ``p`` (rows = copies x batch).
    """
    if int(num_samples) < 1:
        raise ValueError(f"num_samples: expected S >= 1, received {num_samples}")
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {VARIANTS}, received {variant!r}")
    supervision = dict(supervision or {})

    samples = int(num_samples)
    values = int(enumerate[1]) if enumerate else 1
    copies = values * samples
    batch = tf.shape(x)[0]
    for name, (value, mask) in supervision.items():
        if tf.convert_to_tensor(mask).shape.rank != 1:
            raise ValueError(f"mask of {name!r}: expected shape [batch], received {tf.convert_to_tensor(mask).shape}")
    rows = {name: (tile_rows(value, copies), tile_rows(mask, copies)) for name, (value, mask) in supervision.items()}
    enumeration = None
    if enumerate:
        # Copy c = k * S + s holds value k of the enumerated variable.
        enumeration = (enumerate[0], tf.repeat(tf.range(values), samples * batch))

    q = graph.Trace(supervision=rows, temperature=temperature, enumeration=enumeration)
    x_rows = tile_rows(x, copies)
    encode(q, x_rows)
    for name in supervision:
        if name not in q:
            raise ValueError(f"supervised variable {name!r} is never drawn by the encoder; drawn: {list(q.records)}")
    if enumerate and enumerate[0] not in q:
        raise ValueError(f"enumerate: variable {enumerate[0]!r} is never drawn by the encoder")
    p = graph.Trace(conditioned_on=q, temperature=temperature)
    decode(p, x_rows)
    for name in supervision:
        if name not in p:
            raise ValueError(f"supervised variable {name!r} is absent from the decoder; drawn: {list(p.records)}")

    def grid(t):
        return tf.reshape(t, [copies, batch])

    zeros = tf.zeros([copies * batch])
    log_ratio = grid(latent_log_ratio(q, p, analytic_kl and variant == "weighted", kl_weights))
    log_w = grid(tf.add_n([zeros] + [
        tf.where(r.observed, r.log_prob, 0.0) for r in q.records.values() if r.observed is not None
    ]))
    log_a = tf.fill([copies, batch], -math.log(copies))
    if enumerate:
        record = q.records[enumerate[0]]
        latent = tf.ones_like(zeros, tf.bool) if record.observed is None else tf.logical_not(record.observed)
        log_a = tf.where(grid(latent), grid(record.log_prob) - math.log(samples), log_a)
    observed_data = p.log_prob_sum(kinds=("observed",))
    observed_data = grid(zeros if observed_data is None else observed_data)

    classification = tf.reduce_logsumexp(log_a + log_w, axis=0)
    weights = tf.nn.softmax(log_a + log_w, axis=0)
    if variant == "weighted":
        bound = tf.reduce_sum(weights * log_ratio, axis=0) + (1.0 + alpha) * classification
    else:
        bound = tf.reduce_logsumexp(log_a + log_w + log_ratio, axis=0) + alpha * classification
    masks = [mask for _, mask in supervision.values()]
    supervised = tf.reduce_any(tf.stack(masks), axis=0) if masks else tf.zeros([batch], tf.bool)
    return {
        "bound": bound,
        "classification": classification,
        "supervised": supervised,
        "log_likelihood": tf.reduce_sum(weights * observed_data, axis=0),
        "q": q,
        "p": p,
    }
