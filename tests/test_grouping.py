"""Tests for tfssvae.grouping: group posteriors over segment ids."""
import numpy as np
import pytest
import tensorflow as tf

from tfssvae import grouping

# Group sizes of the mixed batch: a single member, a 1,000-member group, and others.
SIZES = (1, 3, 7, 1000, 2, 50)
# Ids given to those groups: not contiguous (3 and 6 are unused) and not sorted.
GROUP_IDS = (4, 0, 2, 7, 1, 5)
NUM_GROUPS = 8


def make_batch(seed, log10_scale_range=(-1.5, 1.0), dtype=np.float64, dim=4):
    """Returns loc, scale [batch, dim] and shuffled segment ids [batch] for SIZES."""
    rng = np.random.default_rng(seed)
    ids = np.concatenate([np.full(n, g) for n, g in zip(SIZES, GROUP_IDS)])
    ids = rng.permutation(ids).astype(np.int32)
    loc = rng.normal(0.0, 3.0, size=(ids.size, dim))
    scale = 10.0 ** rng.uniform(*log10_scale_range, size=(ids.size, dim))
    return loc.astype(dtype), scale.astype(dtype), ids


def numpy_reference(loc, scale, ids, num_groups, method, prior=None):
    """Direct loop-per-group formulas in float64; prior is (loc, scale) or None.

    Groups without members get the prior (0, 1) when prior is None.
    """
    loc = loc.astype(np.float64)
    scale = scale.astype(np.float64)
    dim = loc.shape[1]
    out_loc = np.zeros((num_groups, dim))
    out_scale = np.ones((num_groups, dim))
    for g in range(num_groups):
        members = ids == g
        if not members.any():
            if prior is not None:
                out_loc[g], out_scale[g] = prior
            continue
        m_loc, m_scale = loc[members], scale[members]
        n = members.sum()
        precision = 1.0 / m_scale**2
        if method == "product":
            g_precision = precision.sum(axis=0)
            g_loc = (precision * m_loc).sum(axis=0) / precision.sum(axis=0)
        elif method == "geometric":
            g_precision = precision.sum(axis=0) / n
            g_loc = (precision * m_loc).sum(axis=0) / precision.sum(axis=0)
        else:  # average
            g_loc = m_loc.mean(axis=0)
            g_precision = 1.0 / (m_scale**2).mean(axis=0)
        if prior is not None:
            p_loc, p_scale = prior
            p_precision = 1.0 / p_scale**2
            g_loc = (g_precision * g_loc + p_precision * p_loc) / (g_precision + p_precision)
            g_precision = g_precision + p_precision
        out_loc[g] = g_loc
        out_scale[g] = 1.0 / np.sqrt(g_precision)
    return out_loc, out_scale


@pytest.mark.parametrize("method", grouping.METHODS)
@pytest.mark.parametrize("prior", [None, (0.5, 2.0)])
def test_matches_numpy_formulas(method, prior):
    loc, scale, ids = make_batch(seed=0)
    kwargs = {} if prior is None else dict(
        include_prior=True, prior_loc=prior[0], prior_scale=prior[1])
    g_loc, g_scale = grouping.group_posterior(
        loc, scale, ids, num_groups=NUM_GROUPS, method=method, **kwargs)
    want_loc, want_scale = numpy_reference(loc, scale, ids, NUM_GROUPS, method, prior)
    assert g_loc.shape == (NUM_GROUPS, 4) and g_loc.dtype == tf.float64
    np.testing.assert_allclose(g_loc.numpy(), want_loc, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g_scale.numpy(), want_scale, rtol=1e-10)


def test_prior_per_dimension_and_empty_groups_get_prior():
    loc, scale, ids = make_batch(seed=1)
    p_loc = np.array([0.0, 1.0, -1.0, 2.0])
    p_scale = np.array([1.0, 0.5, 2.0, 3.0])
    g_loc, g_scale = grouping.group_posterior(
        loc, scale, ids, NUM_GROUPS, include_prior=True, prior_loc=p_loc, prior_scale=p_scale)
    for d in range(4):
        want_loc, want_scale = numpy_reference(
            loc[:, d:d + 1], scale[:, d:d + 1], ids, NUM_GROUPS, "product",
            (p_loc[d], p_scale[d]))
        np.testing.assert_allclose(g_loc.numpy()[:, d], want_loc[:, 0], rtol=1e-10)
        np.testing.assert_allclose(g_scale.numpy()[:, d], want_scale[:, 0], rtol=1e-10)
    # Ids 3 and 6 have no members: the prior, with or without include_prior.
    for include_prior in (True, False):
        g_loc, g_scale = grouping.group_posterior(
            loc, scale, ids, NUM_GROUPS, include_prior=include_prior,
            prior_loc=p_loc, prior_scale=p_scale)
        for empty in (3, 6):
            np.testing.assert_array_equal(g_loc.numpy()[empty], p_loc)
            np.testing.assert_array_equal(g_scale.numpy()[empty], p_scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("method", grouping.METHODS)
def test_tiny_scales_are_finite_and_correct(dtype, method):
    # Precisions up to 1e40 overflow float32, and 1000 of them would be near the float64
    # limit of 1e308 squared; the log-precision path must not care.
    loc, scale, ids = make_batch(seed=2, log10_scale_range=(-20, -10), dtype=dtype)
    for prior in (None, (0.0, 1.0)):
        kwargs = {} if prior is None else dict(include_prior=True)
        g_loc, g_scale = grouping.group_posterior(
            loc, scale, ids, NUM_GROUPS, method=method, **kwargs)
        assert np.all(np.isfinite(g_loc.numpy())) and np.all(np.isfinite(g_scale.numpy()))
        want_loc, want_scale = numpy_reference(loc, scale, ids, NUM_GROUPS, method, prior)
        rtol = 1e-4 if dtype == np.float32 else 1e-10
        np.testing.assert_allclose(g_loc.numpy(), want_loc, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(g_scale.numpy(), want_scale, rtol=rtol)


def test_many_members_with_identical_tiny_scales():
    # 1000 equal precisions of 1e40 each: the direct sum would be 1e43 (inf in float32).
    loc = np.random.default_rng(3).normal(size=(1000, 2)).astype(np.float32)
    scale = np.full((1000, 2), 1e-20, np.float32)
    ids = np.zeros(1000, np.int64)
    g_loc, g_scale = grouping.group_posterior(loc, scale, ids)
    np.testing.assert_allclose(g_scale.numpy(), 1e-20 / np.sqrt(1000.0), rtol=1e-5)
    np.testing.assert_allclose(g_loc.numpy()[0], loc.mean(axis=0), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", grouping.METHODS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_single_member_group_is_its_member(method, dtype):
    loc, scale, ids = make_batch(seed=4, dtype=dtype)
    g_loc, g_scale = grouping.group_posterior(loc, scale, ids, NUM_GROUPS, method=method)
    single = GROUP_IDS[SIZES.index(1)]
    (member,) = np.flatnonzero(ids == single)
    # The product goes through log-precisions and back (a log, a log-sum-exp, an exp): each
    # rounds once, and the exp/log kernels differ between CPUs by an ulp or two, so the
    # member comes back within a few ulps, not bit for bit (8 ulps of the dtype allowed).
    rtol = 8 * np.finfo(dtype).eps
    np.testing.assert_allclose(g_loc.numpy()[single], loc[member], rtol=rtol, atol=0)
    np.testing.assert_allclose(g_scale.numpy()[single], scale[member], rtol=rtol, atol=0)


def test_inside_tf_function_with_static_and_computed_num_groups():
    loc, scale, ids = make_batch(seed=5, dtype=np.float32)
    want_loc, want_scale = numpy_reference(loc, scale, ids, NUM_GROUPS, "product")

    @tf.function
    def static_groups(loc, scale, ids):
        return grouping.group_posterior(loc, scale, ids, num_groups=NUM_GROUPS)

    @tf.function(input_signature=[
        tf.TensorSpec([None, 4], tf.float32),
        tf.TensorSpec([None, 4], tf.float32),
        tf.TensorSpec([None], tf.int32),
    ])
    def computed_groups(loc, scale, ids):
        g_loc, g_scale = grouping.group_posterior(loc, scale, ids)
        sizes = grouping.group_sizes(ids)
        member_loc, _ = grouping.gather_to_members((g_loc, g_scale), ids)
        return g_loc, g_scale, sizes, member_loc

    g_loc, g_scale = static_groups(loc, scale, ids)
    assert static_groups.get_concrete_function(loc, scale, ids).output_shapes[0] == [
        NUM_GROUPS, 4]
    np.testing.assert_allclose(g_loc.numpy(), want_loc, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g_scale.numpy(), want_scale, rtol=1e-4)

    g_loc, g_scale, sizes, member_loc = computed_groups(loc, scale, ids)
    assert g_loc.shape == (NUM_GROUPS, 4)
    np.testing.assert_allclose(g_loc.numpy(), want_loc, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g_scale.numpy(), want_scale, rtol=1e-4)
    want_sizes = np.bincount(ids, minlength=NUM_GROUPS)
    np.testing.assert_array_equal(sizes.numpy(), want_sizes)
    np.testing.assert_allclose(member_loc.numpy(), want_loc[ids], rtol=1e-4, atol=1e-5)


def test_non_finite_inside_tf_function_is_asserted():
    @tf.function
    def run(loc, scale, ids):
        return grouping.group_posterior(loc, scale, ids)

    loc = np.zeros((3, 2), np.float32)
    loc[1, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="loc must be finite"):
        run(loc, np.ones((3, 2), np.float32), np.array([0, 5, 1], np.int32))


def naive_posterior(loc, scale, ids, num_groups, method, include_prior):
    """Straightforward tf formulas (direct precisions), float64, for gradient checks."""
    precision = scale ** -2.0
    counts = tf.math.unsorted_segment_sum(tf.ones_like(loc), ids, num_groups)
    p_sum = tf.math.unsorted_segment_sum(precision, ids, num_groups)
    if method == "average":
        g_loc = tf.math.unsorted_segment_sum(loc, ids, num_groups) / counts
        g_precision = counts / tf.math.unsorted_segment_sum(scale**2, ids, num_groups)
    else:
        g_loc = tf.math.unsorted_segment_sum(precision * loc, ids, num_groups) / p_sum
        g_precision = p_sum if method == "product" else p_sum / counts
    if include_prior:  # prior N(0, 1)
        g_loc = g_precision * g_loc / (g_precision + 1.0)
        g_precision = g_precision + 1.0
    return g_loc, g_precision ** -0.5


@pytest.mark.parametrize("method", grouping.METHODS)
@pytest.mark.parametrize("include_prior", [False, True])
def test_gradients_reach_every_member_and_are_exact(method, include_prior):
    rng = np.random.default_rng(6)
    ids = rng.permutation(np.repeat(np.arange(4), [1, 2, 5, 12])).astype(np.int32)
    loc = tf.Variable(rng.normal(size=(20, 3)))
    scale_values = np.exp(rng.uniform(-1.0, 1.0, size=(20, 3)))
    # Ties: a group whose members share one scale, and a single member whose scale
    # equals the prior's, where kinked (min/max/abs) formulas get wrong gradients.
    scale_values[ids == 1] = 0.7
    scale_values[ids == 0] = 1.0
    scale = tf.Variable(scale_values)

    def loss_and_grads(fn):
        with tf.GradientTape() as tape:
            g_loc, g_scale = fn()
            loss = tf.reduce_sum(g_loc) + tf.reduce_sum(g_scale)
        return tape.gradient(loss, [loc, scale])

    grads = loss_and_grads(lambda: grouping.group_posterior(
        loc, scale, ids, method=method, include_prior=include_prior))
    want = loss_and_grads(lambda: naive_posterior(loc, scale, ids, 4, method, include_prior))
    for grad, want_grad in zip(grads, want):
        assert grad is not None
        assert np.all(np.isfinite(grad.numpy()))
        assert np.all(grad.numpy() != 0.0), "every member's loc and scale needs a gradient"
        np.testing.assert_allclose(grad.numpy(), want_grad.numpy(), rtol=1e-9, atol=1e-12)


def test_group_sizes_and_gather_to_members():
    ids = np.array([2, 0, 2, 2, 5], np.int64)
    sizes = grouping.group_sizes(ids)
    assert sizes.dtype == tf.int64
    np.testing.assert_array_equal(sizes.numpy(), [1, 0, 3, 0, 0, 1])
    np.testing.assert_array_equal(grouping.group_sizes(ids, 8).numpy(), [1, 0, 3, 0, 0, 1, 0, 0])
    params = {"loc": tf.reshape(tf.range(12.0), [6, 2]), "n": tf.range(6)}
    members = grouping.gather_to_members(params, ids)
    np.testing.assert_array_equal(members["n"].numpy(), ids)
    np.testing.assert_array_equal(members["loc"].numpy()[:, 0], 2.0 * ids)


def _call(loc=None, scale=None, ids=None, **kwargs):
    """group_posterior on a valid 4-observation batch, with some argument replaced."""
    loc = np.zeros((4, 2), np.float32) if loc is None else loc
    scale = np.ones((4, 2), np.float32) if scale is None else scale
    ids = np.array([0, 1, 1, 2], np.int32) if ids is None else ids
    return grouping.group_posterior(loc, scale, ids, **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(ids=np.zeros((4, 1), np.int32)),
     r"segment_ids must have rank 1, shape \[batch\]; received shape \(4, 1\)"),
    (dict(ids=np.array([0, 1, 2], np.int32)),
     r"one id per observation: length 4 .*received length 3"),
    (dict(ids=np.array([0.0, 1.0, 1.0, 2.0], np.float32)),
     r"segment_ids must have dtype int32 or int64; received float32"),
    (dict(ids=np.array([0, -1, 1, -3], np.int32)),
     r"segment_ids must be >= 0; received negative id\(s\) \[-3, -1\]"),
    (dict(ids=np.array([0, 1, 1, 3]), num_groups=3),
     r"segment_ids must be < num_groups=3; received id\(s\) \[3\]"),
    (dict(num_groups=0), r"num_groups must be >= 1; received 0"),
    (dict(loc=np.zeros((0, 2), np.float32), scale=np.ones((0, 2), np.float32),
          ids=np.zeros(0, np.int32)), r"batch must be non-empty"),
    (dict(ids=[]), r"segment_ids must be non-empty"),
    (dict(scale=np.ones((4, 3), np.float32)),
     r"scale must have the shape of loc \(4, 2\); received shape \(4, 3\)"),
    (dict(loc=np.zeros(4, np.float32), scale=np.ones(4, np.float32)),
     r"loc must have rank 2, shape \[batch, dim\]; received shape \(4,\)"),
    (dict(scale=np.ones((4, 2), np.float64)),
     r"scale must have the dtype of loc \(float32\); received float64"),
    (dict(loc=np.zeros((4, 2), np.int32)), r"loc must have a floating dtype; received int32"),
    (dict(method="mean"), r"method must be one of \('product', 'average', 'geometric'\); "
                          r"received 'mean'"),
    (dict(include_prior=True, prior_scale=0.0), r"prior_scale must be finite and > 0"),
    (dict(prior_loc=np.zeros(3)), r"prior_loc must be a scalar or have shape \[2\]"),
])
def test_bad_inputs_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _call(**kwargs)


@pytest.mark.parametrize("method", grouping.METHODS)
def test_non_finite_values_name_their_groups(method):
    ids = np.array([3, 7, 1, 7, 0, 2, 3], np.int32)
    loc = np.zeros((7, 2), np.float32)
    loc[3, 1] = np.nan  # group 7
    with pytest.raises(ValueError, match=r"loc must be finite; .*group\(s\) \[7\] "
                                         r"\(1 observation\(s\)\)"):
        grouping.group_posterior(loc, np.ones((7, 2), np.float32), ids, method=method)
    scale = np.ones((7, 2), np.float32)
    scale[5, 0] = np.inf  # group 2
    scale[0, 1] = 0.0  # group 3
    scale[6, 0] = -1.0  # group 3
    with pytest.raises(ValueError, match=r"scale must be finite and > 0; .*group\(s\) \[2, 3\] "
                                         r"\(3 observation\(s\)\)"):
        grouping.group_posterior(np.zeros((7, 2), np.float32), scale, ids, method=method)


def test_helpers_reject_bad_ids():
    with pytest.raises(ValueError, match=r"segment_ids must be >= 0"):
        grouping.group_sizes(np.array([0, -2]))
    with pytest.raises(ValueError, match=r"segment_ids must be < num_groups=2; received id\(s\) \[4\]"):
        grouping.gather_to_members(tf.zeros([2, 3]), np.array([0, 4]))
    with pytest.raises(ValueError, match=r"segment_ids must have dtype int32 or int64"):
        grouping.gather_to_members(tf.zeros([2, 3]), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"group_params must have shape \[num_groups, \.\.\.\]"):
        grouping.gather_to_members(tf.constant(1.0), np.array([0]))
