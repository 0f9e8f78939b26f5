"""Evaluation of trained models, built from the array-level metrics in ``tfssvae.metrics``.

``mlvae_report`` runs the ML-VAE evaluation of Bouchacourt et al. (2018): linear probes
of content and style, the test bound against the size of test-time groups, and n-shot
classification of unseen groups by their accumulated content.
"""
import numpy as np
import tensorflow as tf

from tfssvae import data as data_lib
from tfssvae import metrics


def _batched(function, images, batch_size=1000):
    """Applies ``function`` (images -> dict of arrays) over batches and concatenates each output."""
    parts = [function(tf.constant(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
    return {key: np.concatenate([p[key].numpy() for p in parts]) for key in parts[0]}


def _probe_rows(source, seed, probe_examples):
    """The training examples the linear probes learn from: the first draw of ``seed``'s generator,
    so every model probed with one seed learns from the same examples."""
    return np.random.default_rng(seed).permutation(len(source.train_images))[:probe_examples]


def latent_probe_accuracy(encode, source, seed=0, probe_examples=10000, key="mean"):
    """The linear probe of any code: ``encode(images [n, H, W, C])`` returns a dict whose ``key`` is
    ``[n, D]`` (e.g. M1's posterior mean); the same probe and probe examples as ``mlvae_report``'s.

    Returns the test accuracy of a linear classifier of the class from the code of single observations.
    """
    rows = _probe_rows(source, seed, probe_examples)
    encode = tf.function(encode, reduce_retracing=True)
    train = _batched(encode, source.train_images[rows])[key]
    test = _batched(encode, source.test_images)[key]
    return metrics.linear_probe_accuracy(train, source.train_labels[rows], test, source.test_labels)


def _n_shot(encode_group, source, codes, n, rng, repeats, held_out_classes):
    """Nearest-prototype accuracy of test queries with ``n`` test support examples of every class
    (prototypes: their group content), mean over ``repeats`` draws.  Returns ``{"all": acc}`` and,
    when classes are held out, ``"seen"``/``"unseen"``: the accuracy over queries of those classes
    (still classified among all the prototypes)."""
    scores = {"all": []}
    if held_out_classes:
        scores.update(seen=[], unseen=[])
    for _ in range(repeats):
        support, support_ids = [], []
        for label in range(source.num_classes):
            members = rng.permutation(np.flatnonzero(source.test_labels == label))[:n]
            support.append(members)
            support_ids.append(np.full(len(members), label, np.int32))
        support = np.concatenate(support)
        prototypes = encode_group(tf.constant(source.test_images[support]),
                                  tf.constant(np.concatenate(support_ids)))["content_mean"].numpy()
        queries = np.setdiff1d(np.arange(len(source.test_images)), support)
        unseen = np.isin(source.test_labels[queries], held_out_classes)
        for part, chosen in (("all", queries), ("seen", queries[~unseen]), ("unseen", queries[unseen])):
            if part in scores:
                scores[part].append(metrics.nearest_prototype_accuracy(
                    prototypes, np.arange(source.num_classes), codes[chosen], source.test_labels[chosen]))
    return {part: float(np.mean(values)) for part, values in scores.items()}


def mlvae_report(model, source, seed=0, group_sizes=(1, 2, 5, 10, 20), shots=(1, 5, 10), probe_examples=10000,
                 groups_per_batch=50, repeats=50, held_out_classes=()):
    """Content/style probes, test bound per observation against group size, n-shot accuracy.

    Args:
      model: a trained ``models.MLVAE``.
      source: a ``data.DataSource``; its labels define groups and probe targets, its test
        split is never seen in training.
      probe_examples: training examples the probes learn from (any class, held out or not).
      repeats: random draws of the n-shot support sets.  One draw's accuracy varies with the
        draw by 4 to 8 points (s.d., Fashion-MNIST's unseen classes), so 5 draws cannot order
        5 against 10 shots; 50 take seconds.
      held_out_classes: classes kept out of training; n-shot accuracy is then also reported
        over the queries of seen and of unseen classes.

    Returns:
      dict: ``content_probe_accuracy``, ``style_probe_accuracy`` (single observations, no
      test-time grouping), ``test_elbo_per_observation`` {group size: nats},
      ``n_shot_accuracy`` {shots: accuracy}, and with ``held_out_classes``
      ``n_shot_accuracy_seen`` / ``n_shot_accuracy_unseen`` (keys are strings, as in metrics.json).
    """
    held_out_classes = tuple(int(c) for c in held_out_classes)
    unknown = sorted(set(held_out_classes) - set(range(source.num_classes)))
    if unknown:
        raise ValueError(f"held_out_classes: the data have no class {unknown} (classes 0..{source.num_classes - 1})")
    rng = np.random.default_rng(seed)
    encode = tf.function(model.encode)
    train = _probe_rows(source, seed, probe_examples)
    rng.permutation(len(source.train_images))  # the draw _probe_rows made: later draws stay as they were
    train_codes = _batched(encode, source.train_images[train])
    test_codes = _batched(encode, source.test_images)
    report = {}
    for part in ("content", "style"):
        report[f"{part}_probe_accuracy"] = metrics.linear_probe_accuracy(
            train_codes[f"{part}_mean"], source.train_labels[train],
            test_codes[f"{part}_mean"], source.test_labels)

    def negative_bound(batch):  # the unweighted terms: the loss differs from it where the style KL is weighted
        terms = model.compute_losses(batch)[0]
        return terms["reconstruction"] + terms["kl_content"] + terms["kl_style"]

    losses = tf.function(negative_bound, reduce_retracing=True)
    elbo = {}
    for size in group_sizes:
        groups = data_lib.make_groups(source.test_labels, size, rng)
        per_group = []
        for start in range(0, len(groups), groups_per_batch):
            chosen = groups[start:start + groups_per_batch]
            ids = np.concatenate([np.full(len(g), i, np.int32) for i, g in enumerate(chosen)])
            batch = {"x": source.test_images[np.concatenate(chosen)], "group": ids}
            per_group.append(float(losses(batch)) * len(chosen))
        # The loss is minus the bound per group; a group holds `size` observations.
        elbo[str(size)] = -float(np.sum(per_group)) / (len(groups) * size)
    report["test_elbo_per_observation"] = elbo

    encode_group = tf.function(model.encode_group, reduce_retracing=True)
    accuracy = {n: _n_shot(encode_group, source, test_codes["content_mean"], n, rng, repeats, held_out_classes)
                for n in shots}
    report["n_shot_accuracy"] = {str(n): accuracy[n]["all"] for n in shots}
    if held_out_classes:
        for part in ("seen", "unseen"):
            report[f"n_shot_accuracy_{part}"] = {str(n): accuracy[n][part] for n in shots}
    return report


def cascade_report(model, seed=0, num_samples=10000, factor_vae_votes=(10000, 5000), samples_per_value=256,
                   batch_size=500, verbose=False):
    """FactorVAE score, MIG and shape accuracy of a trained ``models.CascadeVAE`` on procedural sprites.

    The representation is the posterior mean of z next to the one-hot code d (the paper's
    model has both); MIG treats d as one more (discrete) latent; the shape accuracy is d
    against the shape factor under the best one-to-one matching, ``d_information`` what d
    carries of each factor (``metrics.code_information``) and ``d_by_shape`` the counts of
    d's values against the shapes.  ``factor_vae_votes``
    is (training votes, evaluation votes): disentanglement_lib's 10,000 and 5,000 by default.

    Every image is rendered and encoded once, ``batch_size`` at a time: the
    ``num_samples`` uniform samples serve MIG, the shape accuracy and FactorVAE's global
    variances; FactorVAE's vote batches come from ``samples_per_value`` images per
    (factor, value) (``metrics.factor_vae_score``; 0 or None: fresh images for every vote).
    """
    from tfssvae.data import sprites

    ground_truth = sprites.SpritesGroundTruth()
    # One trace for every batch size (the last batch of a pool is smaller).
    encode = tf.function(model.encode, input_signature=[model.input_signature()])

    def codes(images):
        out = _batched(encode, images, batch_size)
        return out["mean"], out["d"]

    def representation(images):
        mean, d = codes(images)
        return np.concatenate([mean, np.eye(model.discrete_size, dtype=np.float32)[d]], axis=1)

    rng = np.random.default_rng(seed)
    factors = ground_truth.sample_factors(num_samples, rng)
    mean, d = codes(ground_truth.observations(factors))
    score = metrics.factor_vae_score(
        representation, ground_truth, seed=seed, num_train=factor_vae_votes[0], num_eval=factor_vae_votes[1],
        samples_per_value=samples_per_value or None, chunk_size=8192,
        variance_codes=np.concatenate([mean, np.eye(model.discrete_size, dtype=np.float32)[d]], axis=1),
        verbose=verbose)
    return {
        "factor_vae_score": score["eval_accuracy"],
        "factor_vae_train_accuracy": score["train_accuracy"],
        "factor_vae_active_dims": score["num_active_dims"],
        "mig": metrics.mutual_information_gap(np.concatenate([mean, d[:, None]], axis=1), factors),
        "shape_accuracy": metrics.best_matching_accuracy(d, factors[:, 0]),
        # What d carries of each factor, I(d; v) / H(v): where the shape accuracy is low,
        # which factor d holds instead.
        "d_information": dict(zip(sprites.FACTOR_NAMES, metrics.code_information(d, factors).tolist())),
        # Rows: the values of d; columns: square, ellipse, heart.
        "d_by_shape": [[int(np.sum((d == k) & (factors[:, 0] == s))) for s in range(len(sprites.SHAPE_NAMES))]
                       for k in range(model.discrete_size)],
    }
