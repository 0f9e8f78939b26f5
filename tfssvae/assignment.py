"""Discrete assignment for CascadeVAE: one value per example, by min-cost flow over the batch.

CascadeVAE (Jeong & Song, 2019) chooses the discrete code of a whole batch at once.  Given
unaries ``u`` of shape ``[n, k]`` (``u[i, v]`` is the cost of giving example ``i`` the value
``v``, e.g. ``-log p(x_i | z_i, e_v)``) and ``pair_penalty = p >= 0`` it picks
``d[i] in {0, ..., k-1}`` minimising

    sum_i u[i, d_i] + p * #{unordered pairs i < j : d_i == d_j}
  = sum_i u[i, d_i] + p * sum_v c_v (c_v - 1) / 2,        c_v = #{i : d_i == v}.

The pair term is convex in each count: the m-th example placed in value v costs an extra
``p * (m - 1)``.  So the problem is a min-cost flow: source -> example i (capacity 1),
example i -> value v (cost ``u[i, v]``), value v -> sink through n parallel unit arcs of
costs 0, p, 2p, ...; the cheapest arcs fill first, so the flow cost is the objective.

Two solvers return the same optimum (up to the precisions stated in their docstrings):

* ``"networkx"``: the reference, that graph solved by ``networkx.network_simplex``.
* ``"fast"``: negative-cycle cancelling on the residual graph condensed onto the k values
  and the sink (k + 1 nodes), which is small because k is small; see ``_assign_fast``.

``objective`` evaluates the cost of any assignment in float64, for tests and users.
"""
import math

import numpy as np

SOLVERS = ("networkx", "fast")

# networkx's network simplex is exact only on integer costs, so the reference scales the
# costs to integers with the largest one near 2**40 (a resolution of about 1e-12 of it)
# and rounds; _assign_networkx states the resulting precision.
_NETWORKX_LARGEST_COST = 2.0 ** 40

# The fast solver cancels only cycles cheaper than -_FAST_RELATIVE_TOLERANCE * scale, so
# that float rounding can never make a zero-cost cycle (ties) look negative and loop.
_FAST_RELATIVE_TOLERANCE = 1e-12


def assign(unaries, pair_penalty=0.001, solver="fast"):
    """Optimal value per example under unary costs plus a penalty per pair sharing a value.

    Args:
      unaries: float ``[n, k]`` (numpy array, nested list or tf tensor), finite, ``n >= 1``,
        ``k >= 2``: ``unaries[i, v]`` is the cost of giving example ``i`` the value ``v``.
      pair_penalty: finite float ``>= 0``, added once for every unordered pair of examples
        given the same value (0.001 in the official CascadeVAE code).
      solver: ``"fast"`` (default, exact, exploits the small k) or ``"networkx"``
        (the reference min-cost flow).

    Returns:
      int64 ``[n]`` with values in ``[0, k)``, minimising ``objective``.

    Raises:
      ValueError: for unaries that are not a finite 2-D ``[n, k]`` array with ``n >= 1``
        and ``k >= 2``, a negative or non-finite ``pair_penalty``, or an unknown ``solver``.
    """
    u = _check_unaries(unaries, "assign")
    p = _check_pair_penalty(pair_penalty, "assign")
    if not isinstance(solver, str) or solver not in SOLVERS:
        raise ValueError(f"assign: solver must be one of {SOLVERS}, received {solver!r}")
    if solver == "networkx":
        return _assign_networkx(u, p)
    return _assign_fast(u, p)


def objective(unaries, assignment, pair_penalty):
    """The cost ``sum_i u[i, d_i] + pair_penalty * #{pairs i < j with d_i == d_j}``.

    Args:
      unaries: float ``[n, k]``, as for ``assign``.
      assignment: int ``[n]`` with values in ``[0, k)``.
      pair_penalty: finite float ``>= 0``.

    Returns:
      Python float.  The unary sum is correctly rounded (``math.fsum``) and the number of
      pairs is an exact integer, so equal costs of different assignments agree to within a
      couple of rounding errors.
    """
    u = _check_unaries(unaries, "objective")
    p = _check_pair_penalty(pair_penalty, "objective")
    d = _check_assignment(assignment, u.shape, "objective")
    n, k = u.shape
    counts = np.bincount(d, minlength=k).astype(np.int64)
    pairs = int(np.sum(counts * (counts - 1) // 2))
    return math.fsum(u[np.arange(n), d].tolist()) + p * pairs


# --------------------------------------------------------------------------- input checks


def _check_unaries(unaries, caller):
    """``unaries`` as float64 ``[n, k]``, or a ValueError naming what is wrong."""
    try:
        u = np.asarray(unaries, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{caller}: unaries must be a numeric 2-D array of shape [n, k], received "
            f"{type(unaries).__name__} that does not convert to float ({error})"
        ) from None
    if u.ndim != 2:
        raise ValueError(
            f"{caller}: unaries must be a 2-D array of shape [n, k] (n examples, k discrete "
            f"values), received shape {u.shape}"
        )
    n, k = u.shape
    if n < 1:
        raise ValueError(
            f"{caller}: unaries of shape {u.shape} describe a batch smaller than one; "
            f"expected n >= 1 examples, received n = {n}"
        )
    if k < 2:
        raise ValueError(
            f"{caller}: unaries of shape {u.shape} have a discrete size below 2; expected "
            f"k >= 2 values, received k = {k}"
        )
    bad = ~np.isfinite(u)
    if bad.any():
        where = [tuple(int(x) for x in index) for index in np.argwhere(bad)[:5]]
        raise ValueError(
            f"{caller}: unaries must be finite, received {int(bad.sum())} NaN or inf "
            f"entries of {u.size} (first at [row, value] {where})"
        )
    return u


def _check_pair_penalty(pair_penalty, caller):
    """``pair_penalty`` as a finite Python float ``>= 0``, or a ValueError."""
    try:
        p = np.asarray(pair_penalty, dtype=np.float64)
    except (TypeError, ValueError):
        p = None
    if p is None or p.ndim != 0 or not np.isfinite(p) or p < 0:
        raise ValueError(
            f"{caller}: pair_penalty must be a finite number >= 0, received {pair_penalty!r}"
        )
    return float(p)


def _check_assignment(assignment, unaries_shape, caller):
    """``assignment`` as int64 ``[n]`` with values in ``[0, k)``, or a ValueError."""
    n, k = unaries_shape
    d = np.asarray(assignment)
    if d.shape != (n,):
        raise ValueError(
            f"{caller}: assignment must have shape ({n},) to match unaries {unaries_shape}, "
            f"received shape {d.shape}"
        )
    if not np.issubdtype(d.dtype, np.integer):
        raise ValueError(f"{caller}: assignment must hold integers, received dtype {d.dtype}")
    if d.min() < 0 or d.max() >= k:
        raise ValueError(
            f"{caller}: assignment values must lie in [0, {k}), received values from "
            f"{d.min()} to {d.max()}"
        )
    return d.astype(np.int64)


# --------------------------------------------------------------------------- networkx reference


def _networkx_scale(shifted, pair_penalty):
    """Factor turning the (row-shifted, non-negative) costs into integers near 2**40.

    The largest cost in the graph is the largest shifted unary or the last parallel
    arc's ``p * (n - 1)``; both stay below ``_NETWORKX_LARGEST_COST`` after scaling.
    """
    n = shifted.shape[0]
    largest = float(shifted.max()) + pair_penalty * (n - 1)
    return _NETWORKX_LARGEST_COST / largest if largest > 0 else 1.0


def _assign_networkx(u, p):
    """Reference solver: the min-cost flow graph solved by networkx's network simplex.

    Each row is shifted to have minimum 0 (every example takes exactly one value, so this
    only subtracts a constant from the objective) and every arc cost is scaled by
    ``S = 2**40 / (max shifted unary + p (n - 1))`` and rounded to an integer, because the
    network simplex is exact only on integers.  Each arc cost moves by at most ``0.5 / S``
    and an assignment uses ``n`` unary arcs and ``n`` pair arcs, so every objective moves by
    at most ``n / S`` and the returned assignment is optimal to within ``2 n / S``, about
    ``1.8e-12 * n * (max shifted unary + p n)``.  Its true cost is ``objective(...)``
    evaluated in float, not networkx's integer cost.

    Args:
      u: float64 ``[n, k]``, checked.
      p: float ``>= 0``, checked.

    Returns:
      int64 ``[n]``.
    """
    import networkx as nx  # only the reference needs it; importing it costs ~0.1 s

    n, k = u.shape
    shifted = u - u.min(axis=1, keepdims=True)
    scale = _networkx_scale(shifted, p)
    unary_costs = np.rint(shifted * scale).astype(np.int64).tolist()
    # Parallel arc m (0-based) into the sink is used by the (m + 1)-th example of a value.
    pair_costs = [int(round(p * m * scale)) for m in range(n)]

    graph = nx.MultiDiGraph()
    graph.add_node("source", demand=-n)
    graph.add_node("sink", demand=n)
    graph.add_edges_from(("source", ("example", i), {"capacity": 1, "weight": 0}) for i in range(n))
    graph.add_edges_from(
        (("example", i), ("value", v), {"capacity": 1, "weight": unary_costs[i][v]})
        for i in range(n)
        for v in range(k)
    )
    graph.add_edges_from(
        (("value", v), "sink", {"capacity": 1, "weight": cost}) for v in range(k) for cost in pair_costs
    )
    _, flow = nx.network_simplex(graph)

    d = np.empty(n, dtype=np.int64)
    for i in range(n):
        # flow[node][successor][edge key]; exactly one unit leaves every example.
        chosen = [value for (_, value), by_key in flow[("example", i)].items() if sum(by_key.values()) > 0]
        d[i] = chosen[0]
    return d


# --------------------------------------------------------------------------- fast solver


def _assign_fast(u, p):
    """Exact solver: greedy start, then negative-cycle cancelling over the k values and the sink.

    Why it is exact.  A flow is a min-cost flow iff its residual graph has no negative
    cycle.  Here the flow is an assignment ``d`` and its residual graph has example nodes,
    value nodes, the sink, and the (saturated, so cycle-free) source.  The only residual
    arc into example j comes from its current value a (cost ``-u[j, a]``) and it leaves to
    every other value b (cost ``u[j, b]``), so every path through an example is a move
    "j: a -> b" of cost ``u[j, b] - u[j, a]``.  Keeping, for every ordered pair of values,
    only the cheapest such move gives a graph on k + 1 nodes (values and sink) with arcs

      a -> b   min over examples j at a of u[j, b] - u[j, a]   (j moves from a to b)
      a -> t   p * c_a         (value a receives one more example: its next parallel arc)
      t -> a   -p * (c_a - 1)  (value a gives up one example: its last used parallel arc)

    (of the parallel sink arcs only the cheapest residual one in each direction matters;
    the others cost more).  A negative cycle exists in the full residual graph iff one
    exists in this condensed graph: any full cycle maps onto a condensed closed walk that
    costs no more, and a simple condensed cycle visits each value once, so the examples
    it moves are distinct and it is realised exactly by moving them.  The loop below ends
    only when Bellman-Ford finds no cycle cheaper than ``-tol``, which certifies optimality.
    Every step strictly lowers the objective by more than ``tol``, so it terminates.

    Why it is fast.  With ``p = 0`` the row-wise arg-min is optimal and is returned at once.
    Otherwise it starts from the arg-min, which is usually nearly optimal for the small
    penalties CascadeVAE uses (one check of k + 1 Bellman-Ford rounds on a (k + 1)^2
    matrix then proves it).  When the penalty binds, most of the work is transferring
    examples between two over- and under-full values: the cheapest 2-cycle
    a -> b -> t -> a is cancelled in bulk by moving, in one vectorised step, every example
    of a whose move to b still pays at the counts reached so far (marginal costs of
    successive moves are non-decreasing, so they form a prefix of the sorted gains).
    Longer cycles (swaps, rotations among 3+ values) are then cancelled one at a time.
    Python-level iterations are one per cancellation, each O(n k) numpy work plus an
    O(k^3) Bellman-Ford; nothing grows like n^2 or n^3.

    Precision: rows are shifted to minimum 0 and ``tol = 1e-12 * (max shifted unary + p n)``
    (far above float64 rounding of the sums involved).  At the end every condensed arc
    has reduced cost ``>= -tol`` under the Bellman-Ford potentials, and the difference from
    any other assignment crosses at most 3 n such arcs, so the result is optimal to
    within ``3 n tol``.

    Args:
      u: float64 ``[n, k]``, checked.
      p: float ``>= 0``, checked.

    Returns:
      int64 ``[n]``.
    """
    n, k = u.shape
    d = np.argmin(u, axis=1).astype(np.int64)
    if p == 0.0 or n == 1:
        # No pairs are charged: examples are independent, the arg-min is optimal.
        return d
    u = u - u.min(axis=1, keepdims=True)  # a constant per row; keeps the floats small
    tol = _FAST_RELATIVE_TOLERANCE * (float(u.max()) + p * n)
    rows = np.arange(n)
    counts = np.bincount(d, minlength=k)
    while True:
        # gains[j, b]: change of the unary sum if example j moves from d[j] to b.
        gains = u - u[rows, d][:, None]
        cheapest = _cheapest_moves(gains, d, counts)
        # Cost of the 2-cycle a -> b -> t -> a: move the cheapest j from a to b, so b
        # gains an example (+p c_b) and a loses one (-p (c_a - 1)).
        transfer = cheapest + p * (counts[None, :] - counts[:, None] + 1)
        a, b = np.unravel_index(np.argmin(transfer), transfer.shape)
        if transfer[a, b] < -tol:
            moved = _profitable_transfer(gains[:, b], d, counts, a, b, p, tol)
            d[moved] = b
            counts[a] -= moved.size
            counts[b] += moved.size
            continue
        cycle = _negative_cycle(_condensed_costs(cheapest, counts, p), tol)
        if cycle is None:
            return d
        _cancel_cycle(cycle, gains, d)
        counts = np.bincount(d, minlength=k)


def _cheapest_moves(gains, d, counts):
    """Cheapest move between every ordered pair of values.

    Args:
      gains: float ``[n, k]``, ``gains[j, b] = u[j, b] - u[j, d[j]]``.
      d: int ``[n]``, current values.
      counts: int ``[k]``, ``bincount(d)``.

    Returns:
      float ``[k, k]``: entry ``[a, b]`` is the minimum of ``gains[j, b]`` over examples j
      at value a; ``inf`` on the diagonal and in rows of empty values (no such move).
    """
    k = counts.size
    nonempty = counts > 0
    # Sort examples by value so each value's examples form one segment for reduceat.
    by_value = gains[np.argsort(d, kind="stable")]
    starts = (np.cumsum(counts) - counts)[nonempty]
    cheapest = np.full((k, k), np.inf)
    cheapest[nonempty] = np.minimum.reduceat(by_value, starts, axis=0)
    np.fill_diagonal(cheapest, np.inf)
    return cheapest


def _profitable_transfer(gains_to_b, d, counts, a, b, p, tol):
    """Examples to move from value a to value b so that every single move still pays.

    The l-th move (0-based, cheapest gains first) costs
    ``gain_l + p * (c_b + l) - p * (c_a - 1 - l)``; both the sorted gains and the
    ``2 p l`` term grow with l, so the paying moves are a prefix of the sorted order.

    Args:
      gains_to_b: float ``[n]``, ``u[j, b] - u[j, d[j]]``.
      d: int ``[n]``; counts: int ``[k]``; a, b: the two values; p, tol: floats.

    Returns:
      int ``[m]``, indices of the examples to move (m >= 1 when the caller found the
      cheapest 2-cycle a -> b -> t -> a below ``-tol``).
    """
    members = np.flatnonzero(d == a)
    order = np.argsort(gains_to_b[members], kind="stable")
    steps = np.arange(members.size)
    marginal = gains_to_b[members[order]] + p * (counts[b] - counts[a] + 2 * steps + 1)
    return members[order[: np.count_nonzero(marginal < -tol)]]


def _condensed_costs(cheapest, counts, p):
    """Arc costs of the residual graph condensed onto the k values and the sink.

    Args:
      cheapest: float ``[k, k]`` from ``_cheapest_moves``.
      counts: int ``[k]``.
      p: float.

    Returns:
      float ``[k + 1, k + 1]``, ``inf`` where there is no arc; node k is the sink t.
    """
    k = counts.size
    costs = np.full((k + 1, k + 1), np.inf)
    costs[:k, :k] = cheapest
    costs[:k, k] = p * counts  # a -> t: the next unused parallel arc of value a
    # t -> a: undo the last used parallel arc of a, possible only if a has examples.
    costs[k, :k] = np.where(counts > 0, -p * (counts - 1), np.inf)
    return costs


def _negative_cycle(costs, tol):
    """A cycle cheaper than ``-tol`` in a small dense graph, or None (Bellman-Ford).

    Distances start at 0 everywhere (a virtual source joined to every node) and a node is
    relaxed only when its distance drops by more than ``tol``.  Any cycle in the
    predecessor graph then costs less than ``-tol`` (around it, take the node relaxed
    last: its successor's distance was set from an older, larger value, by more than
    ``tol``).  The distances of an acyclic predecessor graph are bounded below, so the
    rounds end either with such a cycle or with no relaxation, and then every arc has
    reduced cost ``>= -tol`` under the distances as potentials.

    Args:
      costs: float ``[K, K]``, ``costs[x, y]`` the arc x -> y, ``inf`` where none.
      tol: float ``>= 0``.

    Returns:
      list of node indices ``[v0, v1, ...]`` with arcs v0 -> v1 -> ... -> v0, or None.
    """
    size = costs.shape[0]
    columns = np.arange(size)
    dist = np.zeros(size)
    pred = np.full(size, -1)
    rounds = 0
    while True:
        rounds += 1
        through = dist[:, None] + costs  # [from, to]
        best_from = np.argmin(through, axis=0)
        shorter = through[best_from, columns]
        improved = shorter < dist - tol
        if not improved.any():
            return None
        dist[improved] = shorter[improved]
        pred[improved] = best_from[improved]
        # Without a negative cycle no relaxation happens after size - 1 rounds, so the
        # predecessor graph is only searched from then on.
        if rounds >= size:
            cycle = _predecessor_cycle(pred)
            if cycle is not None:
                return cycle


def _predecessor_cycle(pred):
    """A cycle of the predecessor graph, or None.

    Args:
      pred: int ``[K]``, ``pred[y] = x`` for the arc x -> y, -1 for none.

    Returns:
      list of nodes in arc order (``pred[cycle[i + 1]] == cycle[i]``), or None.
    """
    size = pred.size
    for node in range(size):
        # K steps back without reaching -1 must end inside a cycle (only K nodes).
        for _ in range(size):
            node = pred[node]
            if node < 0:
                break
        else:
            cycle = [int(node)]
            back = pred[node]
            while back != node:
                cycle.append(int(back))
                back = pred[back]
            return cycle[::-1]
    return None


def _cancel_cycle(cycle, gains, d):
    """Apply a negative condensed cycle: move the cheapest example along each value arc.

    Arcs through the sink (index k = ``gains.shape[1]``) move no example: they are the
    count changes that the moves themselves imply.  Examples are all chosen before any
    moves, from the assignment the costs were computed for, so a value that receives an
    example earlier in the cycle does not hand that same example on.

    Args:
      cycle: list of condensed nodes, from ``_negative_cycle``.
      gains: float ``[n, k]`` for the current ``d``.
      d: int ``[n]``, updated in place.
    """
    k = gains.shape[1]
    moves = []
    for tail, head in zip(cycle, cycle[1:] + cycle[:1]):
        if tail < k and head < k:
            members = np.flatnonzero(d == tail)
            moves.append((members[np.argmin(gains[members, head])], head))
    for example, value in moves:
        d[example] = value
