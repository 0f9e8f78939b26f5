"""Mutual information gap (Chen et al. 2018), as in disentanglement_lib."""
import numpy as np

from tfssvae.data.validation import check_int
from tfssvae.metrics.utils import check_factors, check_matrix


def _discretise(latents, num_bins):
    """Bin ids ``int [N, D]`` in ``[0, num_bins)``: equal-width bins per column.

    Each column's range [min, max] is cut into ``num_bins`` equal bins, the last one
    closed (the bins of ``np.histogram``); a constant column falls in one bin.
    """
    binned = np.empty(latents.shape, dtype=np.int64)
    for j in range(latents.shape[1]):
        edges = np.histogram_bin_edges(latents[:, j], bins=num_bins)
        binned[:, j] = np.digitize(latents[:, j], edges[1:-1])
    return binned


def _entropy(values):
    """Entropy in nats of the empirical distribution of a label vector."""
    _, counts = np.unique(values, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def mutual_information_gap(latents, factors, num_bins=20, return_per_factor=False):
    """Mutual information gap, MIG (Chen et al. 2018, as in disentanglement_lib).

    Each latent dim is discretised into ``num_bins`` equal-width bins; for every factor
    k the gap is (largest - second largest over dims j of I(z_j; v_k)) / H(v_k), in
    nats, and MIG is the mean gap. Factors with zero entropy (a single value) have no
    gap (NaN per factor) and are left out of the mean. With a single latent dim the
    second largest mutual information is taken as 0.

    Args:
        latents: float ``[N, D]`` finite codes (e.g. encoder means).
        factors: int ``[N, F]`` ground-truth factor values.
        num_bins: bins per latent dim, >= 2.
        return_per_factor: also return the gap of every factor.

    Returns:
        MIG as a float in [0, 1]; with ``return_per_factor`` the pair
        ``(mig, gaps)``, ``gaps`` float64 ``[F]`` (NaN for constant factors).

    Raises:
        ValueError: on bad shapes, empty or non-finite latents, non-integer factors,
            ``num_bins < 2``, or when every factor is constant.
    """
    from sklearn.metrics import mutual_info_score  # pylint: disable=import-outside-toplevel

    latents = check_matrix(latents, "latents")
    factors = check_factors(factors, latents.shape[0], "row of latents")
    num_bins = check_int(num_bins, "num_bins", 2)

    binned = _discretise(latents, num_bins)
    num_dims, num_factors = latents.shape[1], factors.shape[1]
    information = np.zeros((num_dims, num_factors))  # I(z_j; v_k) in nats
    for j in range(num_dims):
        for k in range(num_factors):
            information[j, k] = mutual_info_score(factors[:, k], binned[:, j])
    entropies = np.array([_entropy(factors[:, k]) for k in range(num_factors)])
    if not (entropies > 0).any():
        raise ValueError(
            "factors: expected at least one factor with two or more values, received "
            "only constant factors (zero entropy)")
    ranked = -np.sort(-information, axis=0)  # descending over latent dims
    second = ranked[1] if num_dims > 1 else np.zeros(num_factors)
    gaps = np.full(num_factors, np.nan)
    varying = entropies > 0
    gaps[varying] = (ranked[0] - second)[varying] / entropies[varying]
    mig = float(gaps[varying].mean())
    return (mig, gaps) if return_per_factor else mig
