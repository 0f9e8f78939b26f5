"""Evaluation metrics."""
import numpy as np
import tensorflow as tf
import tqdm

from tfssvae.data.validation import check_int


def predict_classes(model, images, batch_size=1000):
    """Predicted class ``int64 [num_examples]`` for ``images`` ``[num_examples, *input_shape]``.

    Runs ``model.classify`` in a ``tf.function`` over batches, so any size fits in memory.
    """
    if len(images) == 0:
        raise ValueError("images: expected at least one example, received an empty array")
    classify = getattr(model, "_predict_class_function", None)
    if classify is None:
        # One traced function per model, reused by every call (each epoch's validation).
        classify = tf.function(lambda x: model.classify(x)["class"], input_signature=[model.input_signature()])
        model._predict_class_function = classify
    predictions = [
        classify(tf.convert_to_tensor(images[start:start + batch_size], tf.float32)).numpy()
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(predictions)


def classification_error(model, images, labels, batch_size=1000):
    """Fraction of ``images`` whose predicted class differs from ``labels`` ``[num_examples]``."""
    labels = np.asarray(labels)
    if labels.shape != (len(images),):
        raise ValueError(f"labels: expected shape ({len(images)},), received {labels.shape}")
    return float(np.mean(predict_classes(model, images, batch_size) != labels))


# ------------------------------------------------------------------------ input checks
# scipy.optimize and scikit-learn are imported inside the functions that use them:
# training imports this module for classification_error, and importing scikit-learn
# would add about two seconds to every start.

def _check_matrix(values, name, num_rows=None, num_columns=None):
    """Checks a finite numeric ``[rows, columns]`` array; returns it as float64."""
    array = np.asarray(values)
    if array.ndim != 2:
        raise ValueError(
            f"{name}: expected a rank-2 array [examples, dims], received shape "
            f"{array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(
            f"{name}: expected at least one example and one dim, received shape "
            f"{array.shape}")
    if num_rows is not None and array.shape[0] != num_rows:
        raise ValueError(
            f"{name}: expected {num_rows} rows (one per example), received "
            f"{array.shape[0]}")
    if num_columns is not None and array.shape[1] != num_columns:
        raise ValueError(
            f"{name}: expected {num_columns} columns, received {array.shape[1]}")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name}: expected a numeric array, received dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    finite = np.isfinite(array)
    if not finite.all():
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise ValueError(
            f"{name}: expected finite values, received {array.size - finite.sum()} "
            f"NaN or inf values (first in row {row})")
    return array


def _check_labels(values, name, num_examples=None):
    """Checks a non-empty label vector ``[examples]`` (any values np.unique can sort)."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(
            f"{name}: expected a rank-1 array [examples], received shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one label, received an empty array")
    if num_examples is not None and array.shape[0] != num_examples:
        raise ValueError(
            f"{name}: expected {num_examples} labels (one per example), received "
            f"{array.shape[0]}")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError(f"{name}: expected finite labels, received NaN or inf")
    return array


# ------------------------------------------------------------- FactorVAE disentanglement

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


def _represent(representation, ground_truth, factors, num_dims=None):
    """Representation ``float64 [len(factors), dims]`` of the observations of ``factors``."""
    codes = np.asarray(representation(ground_truth.observations(factors)))
    return _check_matrix(codes, "representation(images)", num_rows=len(factors),
                         num_columns=num_dims)


def _factor_vae_votes(representation, ground_truth, factor_sizes, rng, num_votes,
                      batch_size, global_variances, active, chunk_size, progress=None):
    """Vote counts ``int64 [factors, active dims]`` from ``num_votes`` fixed-factor batches.

    A vote: pick a factor k uniformly, draw ``batch_size`` examples whose factor k all
    share the value of the first one, divide each active dim by its global std, and vote
    (arg-min over active dims of the within-batch variance, k). The representations of
    ``chunk_size // batch_size`` batches are computed by one call.
    """
    num_factors = len(factor_sizes)
    votes = np.zeros((num_factors, int(active.sum())), dtype=np.int64)
    batches_per_call = max(1, chunk_size // batch_size)
    global_std = np.sqrt(global_variances[active])
    for start in range(0, num_votes, batches_per_call):
        num_batches = min(batches_per_call, num_votes - start)
        if progress is not None:
            progress.update(num_batches)
        fixed = rng.integers(num_factors, size=num_batches)
        factors = _sample_factors(ground_truth, factor_sizes, num_batches * batch_size, rng)
        factors = factors.reshape(num_batches, batch_size, num_factors)
        # Factor fixed[b] of batch b takes the value of the batch's first example.
        held = (np.arange(num_factors) == fixed[:, None])[:, None, :]  # [batches, 1, F]
        factors = np.where(held, factors[:, :1, :], factors)
        codes = _represent(representation, ground_truth,
                           factors.reshape(-1, num_factors), len(global_variances))
        codes = codes[:, active].reshape(num_batches, batch_size, -1) / global_std
        within = codes.var(axis=1, ddof=1)  # [batches, active dims]
        np.add.at(votes, (fixed, within.argmin(axis=1)), 1)
    return votes


def factor_vae_score(representation, ground_truth, seed=0, batch_size=64,
                     num_train=10000, num_eval=5000, num_variance_estimate=10000,
                     prune_threshold=0.05, chunk_size=4096, verbose=False):
    """FactorVAE disentanglement score (Kim & Mnih 2018, as in disentanglement_lib).

    1. Global variance of each latent dim over ``num_variance_estimate`` random samples.
    2. Dims whose global standard deviation is below ``prune_threshold`` are pruned
       (disentanglement_lib compares the std, sqrt of the variance, with the threshold);
       dims with zero variance are always pruned.
    3. Each vote picks a factor k uniformly, draws ``batch_size`` examples that share a
       random value of factor k, divides the representations by the global std and
       votes (arg-min over active dims of the within-batch variance, k).
    4. A majority-vote classifier maps each active dim to the factor it got most votes
       from in ``num_train`` votes; the score is its accuracy on ``num_eval`` new votes.

    Args:
        representation: callable, images ``[num, ...]`` -> codes ``[num, dims]``
            (e.g. the encoder means); numpy or tensor output.
        ground_truth: an object with ``factor_sizes`` (tuple of ints, one per factor),
            ``sample_factors(num, rng)`` -> int ``[num, factors]`` (``rng`` a
            ``np.random.Generator``) and ``observations(factors)`` -> images ``[num, ...]``,
            e.g. ``tfssvae.data.sprites.SpritesGroundTruth()``.
        seed: seed of the ``np.random.Generator`` that draws all factors.
        batch_size: examples per vote, >= 2.
        num_train: votes that train the classifier, >= 1.
        num_eval: votes that score it, >= 1.
        num_variance_estimate: samples for the global variances, >= 2.
        prune_threshold: float >= 0; minimum global std of an active dim.
        chunk_size: about how many images go through ``representation`` in one call
            (at least ``batch_size``).
        verbose: show a progress bar over the votes (the full metric takes minutes on a CPU).

    Returns:
        ``{"train_accuracy": float, "eval_accuracy": float, "num_active_dims": int}``.
        When every dim is pruned both accuracies are 0.0 and ``num_active_dims`` is 0.

    Raises:
        ValueError: on bad arguments, a ground truth not following the protocol, or
            codes of the wrong shape or with NaN/inf.
    """
    if not callable(representation):
        raise ValueError(
            f"representation: expected a callable images -> codes, received "
            f"{type(representation).__name__}")
    factor_sizes = _check_ground_truth(ground_truth)
    batch_size = check_int(batch_size, "batch_size", 2)
    num_train = check_int(num_train, "num_train", 1)
    num_eval = check_int(num_eval, "num_eval", 1)
    num_variance_estimate = check_int(
        num_variance_estimate, "num_variance_estimate", 2)
    chunk_size = check_int(chunk_size, "chunk_size", 1)
    if (isinstance(prune_threshold, bool) or not isinstance(prune_threshold, (int, float, np.integer, np.floating))
            or not np.isfinite(prune_threshold) or prune_threshold < 0):
        raise ValueError(
            f"prune_threshold: expected a finite number >= 0, received {prune_threshold!r}")
    rng = np.random.default_rng(seed)

    codes = []
    for start in range(0, num_variance_estimate, chunk_size):
        num = min(chunk_size, num_variance_estimate - start)
        factors = _sample_factors(ground_truth, factor_sizes, num, rng)
        codes.append(_represent(representation, ground_truth, factors,
                                codes[0].shape[1] if codes else None))
    global_variances = np.concatenate(codes).var(axis=0, ddof=1)
    active = (np.sqrt(global_variances) >= prune_threshold) & (global_variances > 0)
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}

    def votes(num_votes):
        with tqdm.tqdm(total=num_votes, desc="FactorVAE votes", disable=not verbose) as progress:
            return _factor_vae_votes(representation, ground_truth, factor_sizes, rng,
                                     num_votes, batch_size, global_variances, active,
                                     chunk_size, progress)

    train_votes = votes(num_train)
    eval_votes = votes(num_eval)
    dims = np.arange(train_votes.shape[1])
    classifier = train_votes.argmax(axis=0)  # factor predicted for each active dim
    return {
        "train_accuracy": float(train_votes[classifier, dims].sum() / num_train),
        "eval_accuracy": float(eval_votes[classifier, dims].sum() / num_eval),
        "num_active_dims": int(active.sum()),
    }


# ------------------------------------------------------------ mutual information gap

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

    latents = _check_matrix(latents, "latents")
    factors = np.asarray(factors)
    if factors.ndim != 2 or factors.shape[1] == 0:
        raise ValueError(
            f"factors: expected a rank-2 array [examples, factors] with at least one "
            f"factor, received shape {factors.shape}")
    if factors.shape[0] != latents.shape[0]:
        raise ValueError(
            f"factors: expected {latents.shape[0]} rows (one per row of latents), "
            f"received {factors.shape[0]}")
    if factors.dtype == np.bool_ or not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(f"factors: expected integer values, received dtype {factors.dtype}")
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


# ------------------------------------------------------------- clustering and probes

def best_matching_accuracy(predicted, truth):
    """Accuracy of cluster ids against labels under the best one-to-one matching.

    The confusion matrix of predicted values against true values is matched by the
    Hungarian method (maximum total agreement); the numbers of distinct values may
    differ, and then the values left unmatched count as errors.

    Args:
        predicted: ``[N]`` cluster ids (any sortable values, e.g. the discrete code).
        truth: ``[N]`` true labels.

    Returns:
        The fraction of examples whose cluster is matched to their label, in [0, 1].

    Raises:
        ValueError: if the arrays are not rank 1, empty or of different lengths.
    """
    from scipy.optimize import linear_sum_assignment  # pylint: disable=import-outside-toplevel

    predicted = _check_labels(predicted, "predicted")
    truth = _check_labels(truth, "truth", num_examples=len(predicted))
    predicted_values, predicted_ids = np.unique(predicted, return_inverse=True)
    truth_values, truth_ids = np.unique(truth, return_inverse=True)
    confusion = np.zeros((len(predicted_values), len(truth_values)), dtype=np.int64)
    np.add.at(confusion, (predicted_ids, truth_ids), 1)
    rows, columns = linear_sum_assignment(confusion, maximize=True)
    return float(confusion[rows, columns].sum() / len(predicted))


def linear_probe_accuracy(train_features, train_labels, test_features, test_labels,
                          max_iter=1000):
    """Test accuracy of a linear classifier trained on features (ML-VAE probes).

    Features are standardised with the training mean and std, then a multinomial
    logistic regression (scikit-learn, L2, C = 1) is fitted.

    Args:
        train_features: float ``[N_train, D]``.
        train_labels: ``[N_train]`` with at least two classes.
        test_features: float ``[N_test, D]``.
        test_labels: ``[N_test]``; classes unseen in training count as errors.
        max_iter: iterations of the solver, >= 1.

    Returns:
        The fraction of test examples classified correctly.

    Raises:
        ValueError: on bad shapes, empty or non-finite features, or one training class.
    """
    # pylint: disable=import-outside-toplevel
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_features = _check_matrix(train_features, "train_features")
    train_labels = _check_labels(train_labels, "train_labels", len(train_features))
    test_features = _check_matrix(test_features, "test_features",
                                  num_columns=train_features.shape[1])
    test_labels = _check_labels(test_labels, "test_labels", len(test_features))
    max_iter = check_int(max_iter, "max_iter", 1)
    if len(np.unique(train_labels)) < 2:
        raise ValueError(
            f"train_labels: expected at least two classes, received only "
            f"{train_labels[0]!r}")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    probe.fit(train_features, train_labels)
    return float(np.mean(probe.predict(test_features) == test_labels))


def nearest_prototype_accuracy(prototypes, prototype_labels, queries, query_labels):
    """n-shot accuracy: each query takes the label of its nearest prototype.

    Distances are Euclidean; on a tie the first prototype wins. Computed in chunks of
    queries so that the ``[chunk, P, D]`` differences stay small.

    Args:
        prototypes: float ``[P, D]``, e.g. the group content of each support group.
        prototype_labels: ``[P]``.
        queries: float ``[Q, D]``.
        query_labels: ``[Q]``.

    Returns:
        The fraction of queries whose nearest prototype has their label.

    Raises:
        ValueError: on bad shapes, empty or non-finite arrays.
    """
    prototypes = _check_matrix(prototypes, "prototypes")
    prototype_labels = _check_labels(prototype_labels, "prototype_labels", len(prototypes))
    queries = _check_matrix(queries, "queries", num_columns=prototypes.shape[1])
    query_labels = _check_labels(query_labels, "query_labels", len(queries))
    chunk = max(1, 2 ** 22 // prototypes.size)  # about 32 MiB of float64 differences
    nearest = np.concatenate([
        np.square(queries[start:start + chunk, None, :] - prototypes[None]).sum(axis=2)
        .argmin(axis=1)
        for start in range(0, len(queries), chunk)])
    return float(np.mean(prototype_labels[nearest] == query_labels))
