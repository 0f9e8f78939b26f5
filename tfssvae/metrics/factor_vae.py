"""FactorVAE disentanglement score (Kim & Mnih 2018), as in disentanglement_lib.

A vote fixes one factor k at a random value, draws ``batch_size`` examples that share
it (the other factors uniform), divides the representation by its global std and votes
(arg-min over active dims of the within-batch variance, k).  A majority-vote classifier
maps each dim to the factor it got most training votes from; the score is its accuracy
on new votes.

Two ways to draw the vote batches:

- fresh (``samples_per_value=None``, disentanglement_lib's way): new images for every
  vote, ``(num_train + num_eval) * batch_size`` of them: 960,000 with the defaults.
- pooled (``samples_per_value=m``): for every (factor, value) cell that some vote
  fixes, ``m`` images are drawn once (factor k at its value, the others uniform) and
  encoded once; a vote takes ``batch_size`` of its cell's ``m`` images without
  replacement.  A uniformly random subset of i.i.d. draws is itself i.i.d., so every
  single vote has exactly the definition's distribution; votes of one cell share images,
  which correlates them (the score varies a little more from seed to seed, it is not
  biased).  The evaluation votes get their own pool, so the classifier is scored on
  images it was not trained on.  With sprites (113 cells) and m = 256 this encodes
  2 * 113 * 256 = 57,856 images instead of 960,000.
"""
import numpy as np
import tqdm

from tfssvae.data.validation import check_int
from tfssvae.metrics.utils import check_matrix


def _check_ground_truth(ground_truth):
    """Checks the ground-truth protocol; returns ``factor_sizes`` as an int64 array."""
    for attribute in ("factor_sizes", "sample_factors", "observations"):
        if not hasattr(ground_truth, attribute):
            raise ValueError(
                f"ground_truth: expected an object with factor_sizes, "
                f"sample_factors(num, rng) and observations(factors); received "
                f"{type(ground_truth).__name__} without {attribute!r}")
    sizes = np.asarray(ground_truth.factor_sizes)
    if (sizes.ndim != 1 or sizes.size == 0 or not np.issubdtype(sizes.dtype, np.integer)
            or (sizes < 1).any()):
        raise ValueError(
            f"ground_truth.factor_sizes: expected a non-empty tuple of ints >= 1, "
            f"received {ground_truth.factor_sizes!r}")
    return sizes.astype(np.int64)


def _sample_factors(ground_truth, factor_sizes, num, rng):
    """``ground_truth.sample_factors(num, rng)``, checked: int64 ``[num, factors]``."""
    factors = np.asarray(ground_truth.sample_factors(num, rng))
    if factors.shape != (num, len(factor_sizes)):
        raise ValueError(
            f"ground_truth.sample_factors: expected shape {(num, len(factor_sizes))}, "
            f"received {factors.shape}")
    if factors.dtype == np.bool_ or not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(
            f"ground_truth.sample_factors: expected integer factor indices, received "
            f"dtype {factors.dtype}")
    if (factors < 0).any() or (factors >= factor_sizes).any():
        raise ValueError(
            f"ground_truth.sample_factors: expected factor k in [0, factor_sizes[k]) "
            f"with factor_sizes {tuple(factor_sizes)}, received values in "
            f"[{factors.min()}, {factors.max()}]")
    return factors.astype(np.int64)


def _represent(representation, ground_truth, factors, num_dims=None, chunk_size=None):
    """Representation ``float64 [len(factors), dims]`` of the observations of ``factors``,
    ``chunk_size`` observations a call (all at once when None)."""
    chunk_size = chunk_size or len(factors)
    codes = []
    for start in range(0, len(factors), chunk_size):
        part = factors[start:start + chunk_size]
        codes.append(check_matrix(np.asarray(representation(ground_truth.observations(part))),
                                  "representation(images)", num_rows=len(part), num_columns=num_dims))
        num_dims = codes[0].shape[1]
    return np.concatenate(codes)


def _fresh_votes(representation, ground_truth, factor_sizes, rng, num_votes, batch_size, num_dims,
                 global_std, active, chunk_size, progress):
    """Vote counts ``int64 [factors, active dims]`` from ``num_votes`` freshly drawn batches.

    The representations of ``chunk_size // batch_size`` batches are computed by one call.
    """
    num_factors = len(factor_sizes)
    votes = np.zeros((num_factors, int(active.sum())), dtype=np.int64)
    batches_per_call = max(1, chunk_size // batch_size)
    for start in range(0, num_votes, batches_per_call):
        num_batches = min(batches_per_call, num_votes - start)
        progress.update(num_batches)
        fixed = rng.integers(num_factors, size=num_batches)
        factors = _sample_factors(ground_truth, factor_sizes, num_batches * batch_size, rng)
        factors = factors.reshape(num_batches, batch_size, num_factors)
        # Factor fixed[b] of batch b takes the value of the batch's first example.
        held = (np.arange(num_factors) == fixed[:, None])[:, None, :]  # [batches, 1, F]
        factors = np.where(held, factors[:, :1, :], factors)
        codes = _represent(representation, ground_truth, factors.reshape(-1, num_factors), num_dims)
        codes = codes[:, active].reshape(num_batches, batch_size, -1) / global_std
        within = codes.var(axis=1, ddof=1)  # [batches, active dims]
        np.add.at(votes, (fixed, within.argmin(axis=1)), 1)
    return votes


def _pooled_votes(representation, ground_truth, factor_sizes, rng, num_votes, batch_size, num_dims,
                  global_std, active, chunk_size, samples_per_value, progress):
    """Vote counts ``int64 [factors, active dims]``; each vote's batch is ``batch_size`` of the
    ``samples_per_value`` images drawn once for its (factor, value) cell."""
    num_factors = len(factor_sizes)
    fixed = rng.integers(num_factors, size=num_votes)
    values = rng.integers(factor_sizes[fixed])  # uniform over the fixed factor's values
    cells, cell_of_vote = np.unique(np.stack([fixed, values], axis=1), axis=0, return_inverse=True)
    cell_of_vote = cell_of_vote.reshape(-1)
    factors = _sample_factors(ground_truth, factor_sizes, len(cells) * samples_per_value, rng)
    factors = factors.reshape(len(cells), samples_per_value, num_factors)
    factors[np.arange(len(cells)), :, cells[:, 0]] = cells[:, 1:2]  # cell c: factor k_c at v_c
    codes = _represent(representation, ground_truth, factors.reshape(-1, num_factors), num_dims, chunk_size)
    codes = (codes[:, active] / global_std).reshape(len(cells), samples_per_value, -1)
    votes = np.zeros((num_factors, int(active.sum())), dtype=np.int64)
    step = max(1, 2 ** 20 // samples_per_value)  # about 8 MiB of random keys a chunk of votes
    for start in range(0, num_votes, step):
        chunk = slice(start, min(start + step, num_votes))
        # batch_size distinct members of the cell: the first of a random permutation.
        picks = np.argsort(rng.random((chunk.stop - chunk.start, samples_per_value)), axis=1)[:, :batch_size]
        batches = codes[cell_of_vote[chunk][:, None], picks]  # [votes, batch_size, active dims]
        np.add.at(votes, (fixed[chunk], batches.var(axis=1, ddof=1).argmin(axis=1)), 1)
        progress.update(chunk.stop - chunk.start)
    return votes


def factor_vae_score(representation, ground_truth, seed=0, batch_size=64,
                     num_train=10000, num_eval=5000, num_variance_estimate=10000,
                     prune_threshold=0.05, chunk_size=4096, samples_per_value=None,
                     variance_codes=None, verbose=False):
    """FactorVAE disentanglement score (Kim & Mnih 2018, as in disentanglement_lib).

    1. Global variance of each latent dim over ``num_variance_estimate`` random samples
       (or over ``variance_codes``, the codes of samples already drawn).
    2. Dims whose global standard deviation is below ``prune_threshold`` are pruned
       (disentanglement_lib compares the std, sqrt of the variance, with the threshold);
       dims with zero variance are always pruned.
    3. Each vote picks a factor k uniformly, draws ``batch_size`` examples that share a
       random value of factor k, divides the representations by the global std and
       votes (arg-min over active dims of the within-batch variance, k).  Batches are
       fresh images, or drawn from a pool per (factor, value) (see the module docstring).
    4. A majority-vote classifier maps each active dim to the factor it got most votes
       from in ``num_train`` votes; the score is its accuracy on ``num_eval`` new votes.

    Args:
        representation: callable, images ``[num, ...]`` -> codes ``[num, dims]``
            (e.g. the encoder means); numpy or tensor output.
        ground_truth: an object with ``factor_sizes`` (tuple of ints, one per factor),
            ``sample_factors(num, rng)`` -> int ``[num, factors]`` (``rng`` a
            ``np.random.Generator``; independent uniform factors) and
            ``observations(factors)`` -> images ``[num, ...]``, e.g.
            ``tfssvae.data.sprites.SpritesGroundTruth()``.
        seed: seed of the ``np.random.Generator`` that draws all factors.
        batch_size: examples per vote, >= 2.
        num_train: votes that train the classifier, at least one per factor.
        num_eval: votes that score it, at least one per factor.
        num_variance_estimate: samples for the global variances, >= 2 (unused with
            ``variance_codes``).
        prune_threshold: float >= 0; minimum global std of an active dim.
        chunk_size: about how many images go through ``representation`` in one call
            (at least ``batch_size`` with fresh batches).
        samples_per_value: None for fresh images every vote; else images drawn per
            (factor, value) cell, >= ``batch_size``.
        variance_codes: optional float ``[N >= 2, dims]`` codes of uniformly drawn
            samples (e.g. ones encoded for other metrics) for step 1.
        verbose: show a progress bar over the votes.

    Returns:
        ``{"train_accuracy": float, "eval_accuracy": float, "num_active_dims": int}``.
        When every dim is pruned both accuracies are 0.0 and ``num_active_dims`` is 0.

    Raises:
        ValueError: on bad arguments (fewer votes than factors included), a ground truth
            not following the protocol, or codes of the wrong shape or with NaN/inf.
    """
    if not callable(representation):
        raise ValueError(
            f"representation: expected a callable images -> codes, received "
            f"{type(representation).__name__}")
    factor_sizes = _check_ground_truth(ground_truth)
    batch_size = check_int(batch_size, "batch_size", 2)
    num_train = check_int(num_train, "num_train", 1)
    num_eval = check_int(num_eval, "num_eval", 1)
    for name, value in (("num_train", num_train), ("num_eval", num_eval)):
        if value < len(factor_sizes):
            raise ValueError(
                f"{name}: expected at least one vote per factor ({len(factor_sizes)} factors), "
                f"received {value}")
    chunk_size = check_int(chunk_size, "chunk_size", 1)
    if samples_per_value is not None:
        samples_per_value = check_int(samples_per_value, "samples_per_value", 1)
        if samples_per_value < batch_size:
            raise ValueError(
                f"samples_per_value: expected at least batch_size={batch_size} images per "
                f"(factor, value) to draw a vote's batch from, received {samples_per_value}")
    if (isinstance(prune_threshold, bool) or not isinstance(prune_threshold, (int, float, np.integer, np.floating))
            or not np.isfinite(prune_threshold) or prune_threshold < 0):
        raise ValueError(
            f"prune_threshold: expected a finite number >= 0, received {prune_threshold!r}")
    rng = np.random.default_rng(seed)

    if variance_codes is None:
        num_variance_estimate = check_int(num_variance_estimate, "num_variance_estimate", 2)
        factors = _sample_factors(ground_truth, factor_sizes, num_variance_estimate, rng)
        variance_codes = _represent(representation, ground_truth, factors, chunk_size=chunk_size)
    else:
        variance_codes = check_matrix(variance_codes, "variance_codes")
        if len(variance_codes) < 2:
            raise ValueError(f"variance_codes: expected at least 2 rows, received {len(variance_codes)}")
    global_variances = variance_codes.var(axis=0, ddof=1)
    active = (np.sqrt(global_variances) >= prune_threshold) & (global_variances > 0)
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
    common = dict(representation=representation, ground_truth=ground_truth, factor_sizes=factor_sizes, rng=rng,
                  batch_size=batch_size, num_dims=len(global_variances),
                  global_std=np.sqrt(global_variances[active]), active=active, chunk_size=chunk_size)

    def votes(num_votes):
        with tqdm.tqdm(total=num_votes, desc="FactorVAE votes", disable=not verbose) as progress:
            if samples_per_value is None:
                return _fresh_votes(num_votes=num_votes, progress=progress, **common)
            return _pooled_votes(num_votes=num_votes, samples_per_value=samples_per_value, progress=progress,
                                 **common)

    train_votes = votes(num_train)
    eval_votes = votes(num_eval)
    dims = np.arange(train_votes.shape[1])
    classifier = train_votes.argmax(axis=0)  # factor predicted for each active dim
    return {
        "train_accuracy": float(train_votes[classifier, dims].sum() / num_train),
        "eval_accuracy": float(eval_votes[classifier, dims].sum() / num_eval),
        "num_active_dims": int(active.sum()),
    }
