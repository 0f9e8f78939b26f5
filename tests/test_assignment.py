"""Tests of tfssvae.assignment: both solvers reach the optimum of the CascadeVAE assignment.

The optimum is known exactly on tiny instances (brute force over all k^n assignments);
on larger ones the fast solver must match the networkx reference.  Objectives are compared
with a tolerance far below any real difference between assignments but above the stated
precisions of the solvers (networkx: costs rounded at about 1e-12 of the largest one; fast:
cycles cancelled down to 1e-12 of the cost scale).
"""
import itertools
import signal

import numpy as np
import pytest

from tfssvae.assignment import SOLVERS, assign, objective


@pytest.fixture(autouse=True)
def fail_instead_of_hanging():
    """A solver that stops making progress would loop forever: fail the test after 120 s."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def give_up(signum, frame):
        raise TimeoutError("the solver did not finish within 120 s (an endless loop?)")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(120)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def brute_force_optimum(u, p):
    """Smallest objective over all k^n assignments of ``u`` ``[n, k]`` (tiny n only)."""
    n, k = u.shape
    every = np.array(list(itertools.product(range(k), repeat=n)))  # [k^n, n]
    unary = u[np.arange(n), every].sum(axis=1)
    counts = np.stack([(every == v).sum(axis=1) for v in range(k)], axis=1)  # [k^n, k]
    return float(np.min(unary + p * (counts * (counts - 1) // 2).sum(axis=1)))


def tolerance(u, p):
    """Allowed objective difference: ~50x the solvers' precision bounds (~5e-12 n scale)."""
    n = u.shape[0]
    spread = float(np.max(u.max(axis=1) - u.min(axis=1)))
    return 1e-10 * (1.0 + n * (spread + p * n))


def check_assignment(d, n, k):
    assert isinstance(d, np.ndarray)
    assert d.shape == (n,)
    assert np.issubdtype(d.dtype, np.integer)
    assert d.min() >= 0 and d.max() < k


def unaries_like_cascade_vae(rng, n, k):
    """-log of softmax probabilities, as the decoder likelihoods give."""
    logits = rng.normal(scale=2.0, size=(n, k))
    return np.log(np.exp(logits).sum(axis=1, keepdims=True)) - logits


def biased_unaries(rng, n, k):
    """Every example prefers value 0, so a binding penalty must move many of them."""
    u = rng.uniform(0.0, 1.0, size=(n, k))
    u[:, 0] -= 2.0
    return u


@pytest.mark.parametrize("solver", SOLVERS)
def test_both_solvers_reach_the_brute_force_optimum(solver):
    rng = np.random.default_rng(0)
    for n in range(1, 8):
        for k in (2, 3, 4):
            for p in (0.0, 0.001, 0.3, 1.0, 100.0):
                for kind in ("gaussian", "ties"):
                    if kind == "ties":
                        u = rng.integers(0, 3, size=(n, k)).astype(float)
                    else:
                        u = rng.normal(size=(n, k))
                    d = assign(u, p, solver=solver)
                    check_assignment(d, n, k)
                    best = brute_force_optimum(u, p)
                    assert objective(u, d, p) == pytest.approx(best, abs=tolerance(u, p)), (n, k, p, kind)


def random_instances():
    """(n, k, p, kind) over n in 1..256, k in 2..10, penalties from 0 to balance-forcing."""
    cases = []
    for n in (1, 2, 3, 5, 8, 13, 21, 34, 64):
        for k in (2, 3, 4, 5, 7, 10):
            for p in (0.0, 0.001, k / n, 1e3):
                cases.append((n, k, p, "cascade" if (n + k) % 2 else "biased"))
    for n, k, kind in ((100, 2, "biased"), (100, 3, "cascade"), (100, 10, "biased"),
                       (256, 2, "cascade"), (256, 3, "biased"), (256, 10, "cascade")):
        for p in (0.0, 0.001, k / n, 1e3):
            cases.append((n, k, p, kind))
    return cases


def test_fast_matches_networkx_on_random_instances():
    rng = np.random.default_rng(1)
    for n, k, p, kind in random_instances():
        u = unaries_like_cascade_vae(rng, n, k) if kind == "cascade" else biased_unaries(rng, n, k)
        fast = assign(u, p, solver="fast")
        reference = assign(u, p, solver="networkx")
        check_assignment(fast, n, k)
        check_assignment(reference, n, k)
        assert objective(u, fast, p) == pytest.approx(objective(u, reference, p), abs=tolerance(u, p)), (
            n, k, p, kind)


def test_fast_matches_networkx_on_many_small_hard_instances():
    # Penalties near the unary spread make swaps and 3-value rotations worth doing, the
    # cases the bulk transfers alone do not settle.
    rng = np.random.default_rng(2)
    for trial in range(60):
        n = int(rng.integers(8, 40))
        k = int(rng.integers(3, 8))
        u = rng.normal(size=(n, k)) + rng.normal(scale=2.0, size=k)
        p = float(rng.choice([0.05, 0.2, 1.0, 5.0]))
        fast = assign(u, p)
        reference = assign(u, p, solver="networkx")
        assert objective(u, fast, p) == pytest.approx(objective(u, reference, p), abs=tolerance(u, p)), (
            trial, n, k, p)


@pytest.mark.parametrize("solver", SOLVERS)
def test_zero_penalty_gives_the_row_wise_minimum(solver):
    rng = np.random.default_rng(3)
    for n, k in ((1, 2), (17, 3), (200, 10)):
        u = unaries_like_cascade_vae(rng, n, k)
        d = assign(u, 0.0, solver=solver)
        assert objective(u, d, 0.0) == pytest.approx(u.min(axis=1).sum(), abs=tolerance(u, 0.0))


@pytest.mark.parametrize("solver", SOLVERS)
def test_huge_penalty_balances_the_counts(solver):
    rng = np.random.default_rng(4)
    for n, k in ((7, 2), (50, 3), (101, 7), (200, 10)):
        for u in (unaries_like_cascade_vae(rng, n, k), biased_unaries(rng, n, k)):
            d = assign(u, 1e6, solver=solver)
            counts = np.bincount(d, minlength=k)
            assert counts.max() - counts.min() <= 1, (n, k, counts)


def test_ties_are_still_optimal():
    # Integer costs and penalties: objectives are exact in float, so optima must be equal,
    # and the many zero-cost cycles must not make the fast solver loop.
    rng = np.random.default_rng(5)
    for trial in range(40):
        n = int(rng.integers(1, 80))
        k = int(rng.integers(2, 6))
        u = rng.integers(0, 2 + trial % 3, size=(n, k)).astype(float)
        p = float(rng.choice([0.0, 0.5, 1.0, 2.0]))
        fast = objective(u, assign(u, p), p)
        assert fast == objective(u, assign(u, p, solver="networkx"), p), (trial, n, k, p)
    # Every value equally good for every example: only the balance matters.
    d = assign(np.zeros((10, 3)), 1.0)
    assert sorted(np.bincount(d, minlength=3)) == [3, 3, 4]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("cheaper", [0, 1])
def test_differences_far_below_the_cost_scale_are_resolved(solver, cheaper):
    # The penalty (1) makes the two examples split; giving value 1 to example `cheaper`
    # saves 1e-9, which both solvers resolve (about 1e-12 of the largest cost).  Both
    # orders, so that a solver that saw a tie could not pass by its tie-breaking.
    u = np.zeros((2, 2))
    u[cheaper, 1], u[1 - cheaper, 1] = 1e-9, 2e-9
    expected = [1, 0] if cheaper == 0 else [0, 1]
    assert assign(u, 1.0, solver=solver).tolist() == expected


def test_large_offsets_and_scales_do_not_change_the_optimum():
    rng = np.random.default_rng(6)
    u = unaries_like_cascade_vae(rng, 60, 4)
    p = 0.05
    best = objective(u, assign(u, p, solver="networkx"), p)
    shifted = u + rng.normal(scale=1e4, size=(60, 1))  # a constant per row
    d = assign(shifted, p)
    assert objective(u, d, p) == pytest.approx(best, abs=1e-6)
    scaled = assign(1e3 * u, 1e3 * p)
    assert objective(u, scaled, p) == pytest.approx(best, abs=tolerance(u, p))


def test_accepts_lists_and_tensors():
    d = assign([[0.0, 1.0], [0.0, 1.0]], pair_penalty=10.0)
    assert sorted(d.tolist()) == [0, 1]
    tf = pytest.importorskip("tensorflow")
    u = unaries_like_cascade_vae(np.random.default_rng(7), 32, 3)
    from_tensor = assign(tf.constant(u, tf.float32), tf.constant(0.1))
    from_numpy = assign(u.astype(np.float32), 0.1)
    assert objective(u.astype(np.float32), from_tensor, 0.1) == pytest.approx(
        objective(u.astype(np.float32), from_numpy, 0.1), abs=1e-9)


def test_objective_counts_pairs_sharing_a_value():
    u = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    # Values 0, 0, 1: unary 1 + 3 + 6, one pair shares value 0.
    assert objective(u, np.array([0, 0, 1]), 0.5) == 10.5
    # All three share value 1: three pairs.
    assert objective(u, [1, 1, 1], 0.5) == 12.0 + 1.5


BAD_UNARIES = [
    ([1.0, 2.0], "2-D array of shape \\[n, k\\].*received shape \\(2,\\)"),
    (np.zeros((2, 2, 2)), "2-D array.*received shape \\(2, 2, 2\\)"),
    (np.zeros((0, 3)), "batch smaller than one.*n = 0"),
    (np.zeros((4, 1)), "discrete size below 2.*k = 1"),
    ([["a", "b"], ["c", "d"]], "numeric"),
    (np.array([[0.0, np.nan], [np.inf, 1.0], [0.0, 0.0]]),
     "finite, received 2 NaN or inf.*\\(0, 1\\), \\(1, 0\\)"),
    (np.array([[0.0, -np.inf]]), "finite, received 1 NaN or inf"),
]


@pytest.mark.parametrize("unaries, message", BAD_UNARIES)
def test_bad_unaries_raise(unaries, message):
    with pytest.raises(ValueError, match="assign: unaries.*" + message):
        assign(unaries)
    with pytest.raises(ValueError, match="objective: unaries.*" + message):
        objective(unaries, [0], 0.0)


@pytest.mark.parametrize("penalty", [-0.001, float("nan"), float("inf"), "a lot", [0.1, 0.2]])
def test_bad_pair_penalty_raises(penalty):
    with pytest.raises(ValueError, match="assign: pair_penalty must be a finite number >= 0, received"):
        assign(np.zeros((3, 2)), penalty)
    with pytest.raises(ValueError, match="objective: pair_penalty must be a finite number >= 0"):
        objective(np.zeros((3, 2)), [0, 1, 0], penalty)


def test_unknown_solver_raises():
    with pytest.raises(ValueError, match="solver must be one of \\('networkx', 'fast'\\), received 'scipy'"):
        assign(np.zeros((3, 2)), solver="scipy")


@pytest.mark.parametrize("assignment, message", [
    ([0, 1], "shape \\(3,\\).*received shape \\(2,\\)"),
    ([0, 1, 2], "values must lie in \\[0, 2\\), received values from 0 to 2"),
    ([0, -1, 1], "values must lie in \\[0, 2\\)"),
    ([0.0, 1.0, 1.0], "integers, received dtype float64"),
])
def test_bad_assignment_raises(assignment, message):
    with pytest.raises(ValueError, match="objective: assignment.*" + message):
        objective(np.zeros((3, 2)), assignment, 0.1)
