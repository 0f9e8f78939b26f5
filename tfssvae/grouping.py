"""Grouped content inference over segment ids.

In the ML-VAE (Bouchacourt, Tomioka & Nowozin 2018) a batch holds observations from
several groups, and all members of a group share one content latent. The content
encoder gives every observation ``i`` its own diagonal Normal ``N(loc_i, scale_i^2)``;
:func:`group_posterior` combines the members of each group into one Normal per group.
Which observation belongs to which group is given by ``segment_ids`` (one integer per
observation, in any order, groups of any size), so one batch can hold groups of
different sizes and everything is a handful of vectorised segment ops.

Combination rules, per latent dimension, for a group ``G`` of ``n`` members with
precisions ``p_i = scale_i^-2``:

``"product"`` (ML-VAE): the product of the members' densities, renormalised::

    p_G   = sum_i p_i
    loc_G = sum_i (p_i / p_G) * loc_i

``"geometric"`` (Locatello et al. 2020): the normalised geometric mean, i.e. the
product of the densities each raised to the power ``1/n``, renormalised::

    p_G   = (1/n) * sum_i p_i
    loc_G = sum_i (p_i / sum_j p_j) * loc_i        (same weights as "product")

``"average"`` (Hosoya 2019): arithmetic averages of the members' means and variances::

    loc_G     = (1/n) * sum_i loc_i
    scale_G^2 = (1/n) * sum_i scale_i^2

With ``include_prior=True`` the group density is then multiplied by the prior
``N(prior_loc, prior_scale^2)`` (precisions add, precision-weighted mean). For
``"product"`` this is exactly the prior counted as one more member.

Numerics: precisions are never formed directly. Every sum above is a segment
log-sum-exp of log-precisions ``-2 log(scale_i)`` (or log-variances for ``"average"``)
shifted by the group's extreme value, so each summed term lies in ``[0, 1]``: scales
like 1e-20 in float32 and groups of thousands of members neither overflow nor lose the
small members. A group of one member without the prior returns that member's
``loc``/``scale`` bit for bit.
"""

import numpy as np
import tensorflow as tf

__all__ = ["METHODS", "group_posterior", "gather_to_members", "group_sizes"]

METHODS = ("product", "average", "geometric")

# How many offending ids an error message lists before it elides the rest.
_MAX_IDS_SHOWN = 10


def _format_ids(ids):
    """Formats a sorted list of ids for an error message, eliding a long tail."""
    ids = [int(i) for i in ids]
    if len(ids) <= _MAX_IDS_SHOWN:
        return str(ids)
    return f"{ids[:_MAX_IDS_SHOWN]} and {len(ids) - _MAX_IDS_SHOWN} more"


def _as_segment_ids(segment_ids):
    """Converts ``segment_ids`` to an int32/int64 tensor of rank 1 (static checks only)."""
    if isinstance(segment_ids, (list, tuple)) and not segment_ids:
        # tf would turn [] into a float32 tensor; say what is really wrong.
        raise ValueError("segment_ids must be non-empty (the batch is empty); received [].")
    ids = tf.convert_to_tensor(segment_ids)
    if ids.dtype not in (tf.int32, tf.int64):
        raise ValueError(
            f"segment_ids must have dtype int32 or int64; received {ids.dtype.name}."
        )
    if ids.shape.rank is not None and ids.shape.rank != 1:
        raise ValueError(
            f"segment_ids must have rank 1, shape [batch]; received shape {ids.shape}."
        )
    return ids


def _check_ids_nonnegative(ids):
    """Negative ids would be silently dropped by the segment ops, so reject them."""
    if tf.executing_eagerly():
        values = ids.numpy()
        negative = np.unique(values[values < 0])
        if negative.size:
            raise ValueError(
                f"segment_ids must be >= 0; received negative id(s) {_format_ids(negative)}."
            )
        return
    tf.debugging.assert_non_negative(ids, message="segment_ids must be >= 0")


def _resolve_num_groups(num_groups, ids):
    """Returns ``num_groups`` as a scalar tensor of ``ids.dtype``, checked against ``ids``.

    ``None`` means ``max(ids) + 1``, computed with tf ops so it works in ``tf.function``.
    """
    if num_groups is None:
        return tf.reduce_max(ids) + 1
    if isinstance(num_groups, (bool, np.bool_)):
        raise ValueError(f"num_groups must be a positive int or None; received {num_groups!r}.")
    if isinstance(num_groups, (int, np.integer)):
        count = tf.constant(int(num_groups), dtype=ids.dtype)
        static = int(num_groups)
    else:
        count = tf.convert_to_tensor(num_groups)
        if not count.dtype.is_integer or count.shape.rank != 0:
            raise ValueError(
                f"num_groups must be a positive int, a scalar integer tensor or None; "
                f"received dtype {count.dtype.name} and shape {count.shape}."
            )
        count = tf.cast(count, ids.dtype)
        static = tf.get_static_value(count)
    if static is not None and static < 1:
        raise ValueError(f"num_groups must be >= 1; received {int(static)}.")
    # Ids >= num_groups would be dropped silently on some devices, so check them.
    if tf.executing_eagerly():
        too_big = np.unique(ids.numpy()[ids.numpy() >= int(count)])
        if too_big.size:
            raise ValueError(
                f"segment_ids must be < num_groups={int(count)}; received id(s) "
                f"{_format_ids(too_big)}."
            )
    else:
        tf.debugging.assert_less(ids, count, message="segment_ids must be < num_groups")
    return count


def _check_batch_length(ids, batch_size_static, batch_size, what):
    """Checks that ``ids`` has one id per row of a ``[batch, ...]`` tensor, and batch > 0."""
    length_static = ids.shape[0]
    if batch_size_static == 0 or length_static == 0:
        raise ValueError(
            f"the batch must be non-empty; received {what} with {batch_size_static} rows "
            f"and segment_ids of length {length_static}."
        )
    if batch_size_static is not None and length_static is not None:
        if batch_size_static != length_static:
            raise ValueError(
                f"segment_ids must have one id per observation: length {batch_size_static} "
                f"(the batch size of {what}); received length {length_static}."
            )
        return
    # Only reachable in tf.function with unknown dimensions: check at run time.
    tf.debugging.assert_equal(
        tf.shape(ids, out_type=tf.int64)[0],
        tf.cast(batch_size, tf.int64),
        message=f"segment_ids must have the batch size of {what}",
    )
    tf.debugging.assert_positive(batch_size, message="the batch must be non-empty")


def _check_finite_by_group(name, ok, ids, condition):
    """Raises (eager) or asserts (graph) that every row of ``ok`` [batch] is True.

    The error names the groups holding the bad observations, which is what a user
    needs to find the offending inputs or encoder outputs.
    """
    if tf.executing_eagerly():
        bad = ~ok.numpy()
        if bad.any():
            groups = np.unique(ids.numpy()[bad])
            raise ValueError(
                f"{name} must be {condition}; received values that are not in "
                f"group(s) {_format_ids(groups)} ({int(bad.sum())} observation(s))."
            )
        return
    tf.debugging.Assert(
        tf.reduce_all(ok),
        [f"{name} must be {condition}; received values that are not in the groups:",
         tf.boolean_mask(ids, tf.logical_not(ok))],
        summarize=_MAX_IDS_SHOWN,
    )


def _as_prior(name, value, dtype, dim, positive):
    """Converts a prior parameter to ``dtype``; it must be a scalar or have shape [dim]."""
    value = tf.convert_to_tensor(value, dtype=dtype)
    if value.shape.rank is None or value.shape.rank > 1 or (
        value.shape.rank == 1 and dim is not None and value.shape[0] != dim
    ):
        raise ValueError(
            f"{name} must be a scalar or have shape [{dim}] (the latent dimension); "
            f"received shape {value.shape}."
        )
    static = tf.get_static_value(value)
    if static is not None:
        static = np.asarray(static)
        if not np.all(np.isfinite(static)) or (positive and not np.all(static > 0)):
            condition = "finite and > 0" if positive else "finite"
            raise ValueError(f"{name} must be {condition}; received {static}.")
    return value


def _segment_relative_sum(log_terms, log_shift, ids, num_groups):
    """Per group, ``sum_i exp(log_terms_i - log_shift[group_i])``.

    Args:
      log_terms: ``[batch, dim]``.
      log_shift: ``[num_groups, dim]``, the largest ``log_terms`` of each group, so every
        summed term is in ``[0, 1]`` and the sum is in ``[1, n]``: no overflow, and the
        largest term is exactly 1.
      ids: ``[batch]`` segment ids.
      num_groups: scalar.

    Returns:
      ``[num_groups, dim]``.
    """
    relative = tf.exp(log_terms - tf.gather(log_shift, ids))
    return tf.math.unsorted_segment_sum(relative, ids, num_groups)


def _times_prior(loc, scale, prior_loc, prior_scale):
    """Product of two diagonal Normals, renormalised: ``N(loc, scale) * N(prior)``.

    Shapes: all ``[groups, dim]``. Worked in log-precision like the group sums: the
    combined log-precision is a log-sum-exp of the two, and with
    ``d = log p_1 - log p_2`` the weight of the first mean is ``sigmoid(d)``. (A
    ``min``/``abs`` form would have a kink, and a wrong gradient, where the scales tie.)
    """
    log_precisions = tf.stack([-2.0 * tf.math.log(scale), -2.0 * tf.math.log(prior_scale)])
    log_total = tf.reduce_logsumexp(log_precisions, axis=0)
    diff = log_precisions[0] - log_precisions[1]
    new_loc = tf.sigmoid(diff) * loc + tf.sigmoid(-diff) * prior_loc
    return new_loc, tf.exp(-0.5 * log_total)


def group_posterior(
    loc,
    scale,
    segment_ids,
    num_groups=None,
    method="product",
    include_prior=False,
    prior_loc=0.0,
    prior_scale=1.0,
):
    """Combines per-observation content Normals into one Normal per group.

    See the module docstring for the formulas of the three methods.

    Args:
      loc: float ``[batch, dim]``, per-observation means.
      scale: ``[batch, dim]``, per-observation standard deviations (> 0), same dtype as
        ``loc`` (float32 and float64 both work).
      segment_ids: int32/int64 ``[batch]``, the group of each observation; any order,
        need not be contiguous.
      num_groups: the number of groups (a Python int, a scalar integer tensor, or
        ``None`` for ``max(segment_ids) + 1``). All ids must be ``< num_groups``.
      method: ``"product"`` (ML-VAE), ``"average"`` (Hosoya 2019) or ``"geometric"``
        (Locatello et al. 2020).
      include_prior: if True, multiply each group's density by
        ``N(prior_loc, prior_scale^2)``.
      prior_loc: scalar or ``[dim]``.
      prior_scale: scalar or ``[dim]``, > 0.

    Returns:
      ``(group_loc, group_scale)``, each ``[num_groups, dim]`` with ``loc``'s dtype.
      A group id with no members (possible when ids are not contiguous) gets the prior
      ``(prior_loc, prior_scale)``: it has no evidence, and this keeps every output
      finite. Use :func:`group_sizes` to tell such groups apart.

    Raises:
      ValueError: bad shapes or dtypes, an empty batch, negative ids or ids
        ``>= num_groups``, an unknown method, or (eagerly) non-finite ``loc`` or
        non-finite / non-positive ``scale``, naming the groups that hold them. Inside
        ``tf.function`` the value checks become run-time assertions
        (``tf.errors.InvalidArgumentError``).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; received {method!r}.")
    loc = tf.convert_to_tensor(loc)
    if not loc.dtype.is_floating:
        raise ValueError(f"loc must have a floating dtype; received {loc.dtype.name}.")
    scale = tf.convert_to_tensor(scale)
    if scale.dtype != loc.dtype:
        raise ValueError(
            f"scale must have the dtype of loc ({loc.dtype.name}); received {scale.dtype.name}."
        )
    if loc.shape.rank is not None and loc.shape.rank != 2:
        raise ValueError(f"loc must have rank 2, shape [batch, dim]; received shape {loc.shape}.")
    if not loc.shape.is_compatible_with(scale.shape):
        raise ValueError(
            f"scale must have the shape of loc {loc.shape}; received shape {scale.shape}."
        )
    if loc.shape.rank is None:  # only in tf.function with an unknown-rank signature
        tf.debugging.assert_rank(loc, 2, message="loc must have shape [batch, dim]")
        tf.debugging.assert_equal(tf.shape(loc), tf.shape(scale),
                                  message="scale must have the shape of loc")
    ids = _as_segment_ids(segment_ids)
    _check_batch_length(ids, loc.shape[0], tf.shape(loc)[0], "loc")
    _check_ids_nonnegative(ids)
    num_groups = _resolve_num_groups(num_groups, ids)

    dim = loc.shape[1] if loc.shape.rank == 2 else None
    prior_loc = _as_prior("prior_loc", prior_loc, loc.dtype, dim, positive=False)
    prior_scale = _as_prior("prior_scale", prior_scale, loc.dtype, dim, positive=True)

    # log(scale) of a zero, negative or non-finite scale would poison its whole group
    # with NaN or inf; fail early and say which group so the culprit can be found.
    _check_finite_by_group(
        "loc", tf.reduce_all(tf.math.is_finite(loc), axis=1), ids, "finite")
    _check_finite_by_group(
        "scale",
        tf.reduce_all(tf.math.is_finite(scale) & (scale > 0), axis=1),
        ids,
        "finite and > 0",
    )

    counts = tf.math.unsorted_segment_sum(tf.ones_like(loc), ids, num_groups)  # [G, dim]
    has_members = counts > 0
    # Empty groups get placeholders (count 1, shift scale 1) so every intermediate stays
    # finite, which also keeps NaN out of gradients; they are replaced by the prior below.
    safe_counts = tf.where(has_members, counts, tf.ones_like(counts))

    log_scale = tf.math.log(scale)
    if method == "average":
        # Shift by the largest variance of the group: scale_G = max_scale * sqrt(mean of
        # (scale_i / max_scale)^2), each ratio in (0, 1].
        max_scale = tf.math.unsorted_segment_max(scale, ids, num_groups)
        max_scale = tf.where(has_members, max_scale, tf.ones_like(max_scale))
        log_variance = 2.0 * log_scale
        relative_sum = _segment_relative_sum(
            log_variance, 2.0 * tf.math.log(max_scale), ids, num_groups)
        group_scale = max_scale * tf.sqrt(relative_sum / safe_counts)
        group_loc = tf.math.unsorted_segment_sum(loc, ids, num_groups) / safe_counts
    else:
        # Shift by the largest precision (smallest scale) of the group: p_G =
        # p_max * relative_sum with relative_sum in [1, n], so
        # scale_G = min_scale * relative_sum^-1/2 (product) or * (relative_sum / n)^-1/2
        # (geometric). No stop_gradient on the shift: the result does not depend on
        # it, so its gradient terms cancel exactly, and every member gets its gradient.
        min_scale = tf.math.unsorted_segment_min(scale, ids, num_groups)
        min_scale = tf.where(has_members, min_scale, tf.ones_like(min_scale))
        log_precision = -2.0 * log_scale
        max_log_precision = -2.0 * tf.math.log(min_scale)
        relative_sum = _segment_relative_sum(log_precision, max_log_precision, ids, num_groups)
        if method == "product":
            group_scale = min_scale * tf.math.rsqrt(relative_sum)
        else:  # geometric
            group_scale = min_scale * tf.sqrt(safe_counts / relative_sum)
        # weight_i = p_i / sum_j p_j, in log space so nothing is ever as large as p_i.
        log_total = max_log_precision + tf.math.log(relative_sum)
        weights = tf.exp(log_precision - tf.gather(log_total, ids))
        group_loc = tf.math.unsorted_segment_sum(weights * loc, ids, num_groups)

    prior_loc = tf.broadcast_to(prior_loc, tf.shape(group_loc))
    prior_scale = tf.broadcast_to(prior_scale, tf.shape(group_scale))
    if include_prior:
        group_loc, group_scale = _times_prior(group_loc, group_scale, prior_loc, prior_scale)
    group_loc = tf.where(has_members, group_loc, prior_loc)
    group_scale = tf.where(has_members, group_scale, prior_scale)
    return group_loc, group_scale


def gather_to_members(group_params, segment_ids):
    """Gives every observation its group's parameters.

    Args:
      group_params: a tensor ``[num_groups, ...]`` or a (nested) tuple/list/dict of
        them, e.g. the ``(group_loc, group_scale)`` returned by :func:`group_posterior`.
      segment_ids: int32/int64 ``[batch]``, the group of each observation.

    Returns:
      The same structure with each tensor gathered to ``[batch, ...]``: row ``i`` is
      row ``segment_ids[i]`` of the input. Gradients flow back to the group parameters.

    Raises:
      ValueError: bad ``segment_ids`` (dtype, rank, empty, negative), a parameter of
        rank 0, or (eagerly) an id ``>= num_groups``.
    """
    ids = _as_segment_ids(segment_ids)
    if ids.shape[0] == 0:
        raise ValueError("segment_ids must be non-empty (the batch is empty); received length 0.")
    _check_ids_nonnegative(ids)

    def gather(params):
        params = tf.convert_to_tensor(params)
        if params.shape.rank == 0:
            raise ValueError(
                "group_params must have shape [num_groups, ...]; received a scalar."
            )
        _resolve_num_groups(tf.shape(params, out_type=ids.dtype)[0], ids)
        return tf.gather(params, ids)

    return tf.nest.map_structure(gather, group_params)


def group_sizes(segment_ids, num_groups=None):
    """Counts the members of each group.

    Args:
      segment_ids: int32/int64 ``[batch]``, the group of each observation.
      num_groups: as in :func:`group_posterior` (``None``: ``max(segment_ids) + 1``).

    Returns:
      ``[num_groups]`` counts with the dtype of ``segment_ids``; zero for ids that no
      observation has.
    """
    ids = _as_segment_ids(segment_ids)
    if ids.shape[0] == 0:
        raise ValueError("segment_ids must be non-empty (the batch is empty); received length 0.")
    _check_ids_nonnegative(ids)
    num_groups = _resolve_num_groups(num_groups, ids)
    return tf.math.unsorted_segment_sum(tf.ones_like(ids), ids, num_groups)
