r"""Benchmark: solve time of the CascadeVAE assignment, networkx reference against the fast solver.

  python benchmarks/assignment_speed.py --sizes=64,256,1024 --values=3,10 --repeats=11

For every batch size n, discrete size k and pair penalty, both solvers run in this process
on the same random instances (unaries ``-log softmax(logits)``, logits ~ N(0, 2^2), as a
decoder's likelihoods give); the median wall time of each, the speed-up and whether the
two optimal objectives agree are reported, as markdown tables for benchmarks/RESULTS.md.

Penalties: ``0.001`` is the official CascadeVAE value (it rarely moves an example away from
its arg-min); ``binding`` is ``k / n``, so a value holding its fair share n / k of the batch
pays about 1 per extra example, as much as the unaries differ, and the counts matter.
"""
import os
import platform
import statistics
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tfssvae.assignment import assign, objective  # noqa: E402

flags.DEFINE_list("sizes", ["64", "256", "1024"], "Batch sizes n.")
flags.DEFINE_list("values", ["3", "10"], "Discrete sizes k.")
flags.DEFINE_list("penalties", ["0.001", "binding"], "Pair penalties: numbers, or 'binding' for k / n.")
flags.DEFINE_integer("repeats", 11, "Timed instances per (n, k, penalty) for the fast solver.")
flags.DEFINE_integer("networkx_repeats", 11, "Timed instances for networkx below --large_n.")
flags.DEFINE_integer("large_n", 1024, "From this n on, networkx runs --large_networkx_repeats times.")
flags.DEFINE_integer("large_networkx_repeats", 5, "Timed networkx instances at n >= --large_n (it is slow).")
flags.DEFINE_integer("seed", 0, "Seed of the random unaries.")
FLAGS = flags.FLAGS


def cascade_unaries(rng, n, k):
    """float ``[n, k]``: ``-log softmax`` of Normal(0, 2^2) logits."""
    logits = rng.normal(scale=2.0, size=(n, k))
    return np.log(np.exp(logits).sum(axis=1, keepdims=True)) - logits


def timed(solver, u, p):
    """(assignment, seconds) of one solve."""
    start = time.perf_counter()
    d = assign(u, p, solver=solver)
    return d, time.perf_counter() - start


def measure(rng, n, k, p):
    """Median seconds of both solvers, the largest objective difference, the share moved."""
    fast_seconds, networkx_seconds, differences, moved = [], [], [], []
    networkx_runs = FLAGS.large_networkx_repeats if n >= FLAGS.large_n else FLAGS.networkx_repeats
    for repeat in range(max(FLAGS.repeats, networkx_runs)):
        u = cascade_unaries(rng, n, k)
        fast, seconds = timed("fast", u, p)
        if repeat < FLAGS.repeats:
            fast_seconds.append(seconds)
        moved.append(np.mean(fast != u.argmin(axis=1)))
        if repeat < networkx_runs:
            reference, seconds = timed("networkx", u, p)
            networkx_seconds.append(seconds)
            # Agreement is judged at the solvers' precision (~1e-12 of the cost scale each).
            scale = float(np.max(u.max(axis=1) - u.min(axis=1))) + p * n
            difference = abs(objective(u, fast, p) - objective(u, reference, p))
            if difference > 1e-10 * (1 + n * scale):
                raise AssertionError(f"objectives differ by {difference} at n={n}, k={k}, p={p}")
            differences.append(difference)
    return (statistics.median(networkx_seconds), statistics.median(fast_seconds),
            max(differences), float(np.mean(moved)))


def main(argv):
    del argv
    rng = np.random.default_rng(FLAGS.seed)
    # Warm up both code paths (networkx's import, numpy's first calls) outside the timings.
    warm = cascade_unaries(rng, 8, 3)
    assign(warm, 0.1, solver="networkx")
    assign(warm, 0.1, solver="fast")

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, numpy {np.__version__}; load average "
          f"{os.getloadavg()[0]:.1f} at start")
    for penalty in FLAGS.penalties:
        lines = ["| n | k | networkx median ms | fast median ms | speed-up |", "|---|---|---|---|---|"]
        worst, moved_shares = 0.0, []
        for n in map(int, FLAGS.sizes):
            for k in map(int, FLAGS.values):
                p = k / n if penalty == "binding" else float(penalty)
                networkx_s, fast_s, difference, moved = measure(rng, n, k, p)
                worst = max(worst, difference)
                moved_shares.append(moved)
                lines.append(f"| {n} | {k} | {1e3 * networkx_s:.2f} | {1e3 * fast_s:.3f} | "
                             f"{networkx_s / fast_s:.0f}x |")
                print(f"  n={n} k={k} p={p:g}: networkx {1e3 * networkx_s:.2f} ms, "
                      f"fast {1e3 * fast_s:.3f} ms", file=sys.stderr, flush=True)
        name = "k / n (binding)" if penalty == "binding" else penalty
        print(f"\npair_penalty = {name}: objectives agree on every instance (largest difference "
              f"{worst:.1e}); the optimum moves {100 * min(moved_shares):.1f}-"
              f"{100 * max(moved_shares):.1f} % of examples away from their arg-min\n")
        print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
