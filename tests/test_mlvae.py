"""ML-VAE: groups of mixed sizes train with gradients everywhere; test-time grouping; the grouped batcher."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssvae import data as data_lib
from tfssvae import configs, experiment, models

SHAPE = (8, 8, 1)


def tiny_mlvae(**kwargs):
    keras.utils.set_random_seed(0)
    return models.MLVAE(SHAPE, 10, content_dim=3, style_dim=2, hidden_units=(16,), **kwargs)


def mixed_size_batch():
    """Groups of sizes 1, 3 and 7, rows shuffled so the segment ids are unsorted."""
    rng = np.random.default_rng(0)
    ids = np.repeat([0, 1, 2], [1, 3, 7]).astype("int32")
    prototypes = rng.uniform(size=(3, *SHAPE))
    x = (rng.uniform(size=(11, *SHAPE)) < prototypes[ids]).astype("float32")
    order = rng.permutation(11)
    return {"x": tf.constant(x[order]), "group": tf.constant(ids[order])}


@pytest.mark.parametrize("options", [{}, {"content_per_observation": True, "include_prior": True}])
def test_groups_of_sizes_1_3_7_train_and_every_encoder_gets_gradient(options):
    model = tiny_mlvae(**options)
    batch = mixed_size_batch()
    with tf.GradientTape() as tape:
        losses, _ = model.compute_losses(batch, training=True)
    encoder_variables = model.content_encoder.trainable_variables + model.style_encoder.trainable_variables
    gradients = tape.gradient(losses["loss"], encoder_variables)
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in gradients)

    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(tf.data.Dataset.from_tensors(batch).repeat(60), epochs=1, verbose=0)
    before = float(losses["loss"])
    after = np.mean([float(model.compute_losses(batch)[0]["loss"]) for _ in range(10)])
    assert after < before - 1.0, (before, after, history.history["loss"])


def test_group_encoding_is_the_product_of_single_encodings():
    model = tiny_mlvae()
    x = np.random.default_rng(1).uniform(size=(5, *SHAPE)).astype("float32")
    single = model.encode(x)
    grouped = model.encode_group(x, tf.constant([1, 0, 1, 1, 0]))
    for group, members in ((0, [1, 4]), (1, [0, 2, 3])):
        precision = np.sum(single["content_scale"].numpy()[members] ** -2.0, axis=0)
        loc = np.sum(single["content_mean"].numpy()[members] * single["content_scale"].numpy()[members] ** -2.0,
                     axis=0) / precision
        np.testing.assert_allclose(grouped["content_mean"][group], loc, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(grouped["content_scale"][group], precision ** -0.5, rtol=1e-4)


def test_grouped_source_batches():
    source = data_lib.load_source("digits")
    batches = data_lib.GroupedSource(source.train_images, source.train_labels, groups_per_batch=4,
                                     group_size=5, seed=3)
    first = list(batches.epoch(0).take(3).as_numpy_iterator())
    for batch in first:
        assert batch["x"].shape == (20, *SHAPE) and not batch["y_mask"].any()
        for group in range(4):
            rows = batch["group"] == group
            assert rows.sum() == 5 and len(np.unique(batch["y"][rows])) == 1  # one class per group
    assert not np.array_equal(first[0]["group"], np.repeat(np.arange(4), 5))  # rows shuffled
    resumed = next(batches.epoch(0, skip_steps=2).as_numpy_iterator())
    np.testing.assert_array_equal(resumed["x"], first[2]["x"])
    again = next(batches.epoch(0).as_numpy_iterator())
    np.testing.assert_array_equal(again["x"], first[0]["x"])

    variable = data_lib.GroupedSource(source.train_images, source.train_labels, 4, 5, seed=3, variable_sizes=True)
    sizes = [np.bincount(b["group"]) for b in variable.epoch(1).as_numpy_iterator()]
    assert len(sizes) == variable.steps_per_epoch
    assert min(s.min() for s in sizes) >= 1 and max(s.max() for s in sizes) <= 5
    assert len({s for batch in sizes for s in batch}) > 1

    with pytest.raises(ValueError, match="groups_per_batch"):
        data_lib.GroupedSource(source.train_images[:30], source.train_labels[:30], 10, 5, seed=0)
    with pytest.raises(ValueError, match="group_column"):
        data_lib.GroupedSource(source.train_images, source.train_labels[:5], 4, 5, seed=0)


def test_mlvae_runs_end_to_end_with_metrics_and_export(tmp_path):
    config = configs.get("mlvae", {
        "dataset": "digits", "epochs": 1, "model.content_dim": 3, "model.style_dim": 2, "model.hidden_units": (16,),
        "groups_per_batch": 8, "group_size": 4, "verbose": 0, "held_out_classes": (8, 9),
        "model_dir": str(tmp_path / "m"), "export_dir": str(tmp_path / "x")})
    results = experiment.run(config)
    assert results == json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert 0 <= results["content_probe_accuracy"] <= 1 and 0 <= results["style_probe_accuracy"] <= 1
    assert set(results["test_elbo_per_observation"]) == {"1", "2", "5", "10", "20"}
    for key in ("n_shot_accuracy", "n_shot_accuracy_seen", "n_shot_accuracy_unseen"):
        assert set(results[key]) == {"1", "5", "10"}
    # The accuracy over all queries is the seen and unseen ones' weighted by their numbers of queries
    # (the digits' test classes hold 35 to 37 images each, so the weights are about 8/10 and 2/10).
    for n in ("1", "5", "10"):
        mixed = 0.8 * results["n_shot_accuracy_seen"][n] + 0.2 * results["n_shot_accuracy_unseen"][n]
        assert results["n_shot_accuracy"][n] == pytest.approx(mixed, abs=0.02)
    loaded = tf.saved_model.load(results["export_path"])
    assert sorted(loaded.signatures) == ["encode", "encode_group", "generate", "reconstruct", "serving_default"]
    out = loaded.signatures["encode_group"](images=tf.zeros([3, *SHAPE]), group_ids=tf.constant([0, 1, 1]))
    assert out["content_mean"].shape == (2, 3)
    assert loaded.signatures["generate"](content=tf.zeros([2, 3]), style=tf.zeros([2, 2]))["images"].shape == (2, *SHAPE)
    assert os.path.exists(os.path.join(results["export_path"], "saved_model.pb"))


@pytest.mark.parametrize("ids, match", [
    ([0, 1], "segment_ids"), ([0, -1, 1, 1, 0], "negative"), ([0.0, 1.0, 1.0, 0.0, 0.0], "int32 or int64"),
])
def test_bad_group_ids_are_value_errors(ids, match):
    model = tiny_mlvae()
    with pytest.raises(ValueError, match=match):
        model.encode_group(np.zeros((5, *SHAPE), "float32"), tf.constant(ids))


def test_swap_grid_and_interpolation_figures():
    from tfssvae import figures

    model = tiny_mlvae()
    images = np.random.default_rng(2).uniform(size=(3, *SHAPE)).astype("float32")

    def encode(x):
        code = model.encode(x)
        return code["content_mean"].numpy(), code["style_mean"].numpy()

    def generate(content, style):
        return model.generate(content, style)["images"].numpy()

    grid = figures.swap_grid(encode, generate, images)
    assert grid.shape == (4, 4, *SHAPE)
    np.testing.assert_array_equal(grid[1:, 0], images)
    np.testing.assert_array_equal(grid[0, 1:], images)
    content, style = encode(images)
    np.testing.assert_allclose(grid[2, 3], generate(content[1:2], style[2:3])[0], rtol=1e-5)
    moving = figures.interpolation(encode, generate, images[0], images[1], steps=4)
    assert moving.shape == (2, 4, *SHAPE)
    np.testing.assert_allclose(moving[0, 0], generate(content[:1], style[:1])[0], rtol=1e-5)
    np.testing.assert_allclose(moving[0, -1], generate(content[1:2], style[:1])[0], rtol=1e-5)
    np.testing.assert_allclose(moving[1, -1], generate(content[:1], style[1:2])[0], rtol=1e-5)


def test_held_out_classes_never_reach_a_training_batch():
    source = data_lib.load_source("digits")
    config = configs.get("mlvae", {"groups_per_batch": 4, "group_size": 5, "held_out_classes": (3, 7)})
    batches = experiment.grouped_batches(config, source)
    seen = np.concatenate([b["y"] for epoch in (0, 1) for b in batches.epoch(epoch).as_numpy_iterator()])
    # Every training example of the other eight classes can be drawn, none of classes 3 and 7.
    assert sorted(np.unique(seen)) == [0, 1, 2, 4, 5, 6, 8, 9]
    # And the batches hold the images of those rows, not just their labels.
    first = next(batches.epoch(0).as_numpy_iterator())
    rows = [np.flatnonzero((source.train_images == x).all(axis=(1, 2, 3))) for x in first["x"]]
    assert not np.isin(np.concatenate(rows), np.flatnonzero(np.isin(source.train_labels, (3, 7)))).any()


@pytest.mark.parametrize("held_out, match", [
    ((10,), r"held_out_classes: the data have no class \[10\]"),
    ((2, 2), "listed twice"),
    (tuple(range(1, 10)), "fewer than two"),
])
def test_bad_held_out_classes_are_named(held_out, match):
    source = data_lib.load_source("digits")
    config = configs.get("mlvae", {"held_out_classes": held_out})
    with pytest.raises(ValueError, match=match):
        experiment.grouped_batches(config, source)


def test_a_group_column_with_one_group_is_refused():
    images = np.zeros((40, *SHAPE), "float32")
    with pytest.raises(ValueError, match=r"group_column: expected at least two distinct values .* only \[4\]"):
        data_lib.GroupedSource(images, np.full(40, 4), groups_per_batch=2, group_size=5, seed=0)


def test_groups_larger_than_the_batch_are_refused():
    with pytest.raises(ValueError, match=r"group_size: a group of 120 examples is larger than a batch \(batch_size=100\)"):
        experiment.validate(configs.get("mlvae", {"group_size": 120}))
    with pytest.raises(ValueError, match="held_out_classes: expected a tuple of class ids"):
        experiment.validate(configs.get("mlvae", {"held_out_classes": (-1,)}))


def test_the_train_binary_names_a_held_out_class_the_data_lack_in_one_line(tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    completed = subprocess.run(
        [sys.executable, "-m", "binaries.train", "--config=tfssvae/configs/mlvae.py",
         "--config.held_out_classes=(3,12)", f"--config.model_dir={tmp_path}", "--config.export=false"],
        capture_output=True, text=True, env=env, timeout=300, cwd=root)
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "tfssvae-train: error: held_out_classes: the data have no class [12]" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "model.json").exists()  # refused before the run was written down


def test_principal_components_find_the_axis_of_most_variance_and_the_scatter_is_drawn(tmp_path):
    from PIL import Image
    from tfssvae import figures

    rng = np.random.default_rng(0)
    t = 10.0 * rng.normal(size=300)
    codes = np.outer(t, [0.0, 0.6, 0.8]) + 0.1 * rng.normal(size=(300, 3))  # a line along (0, .6, .8)
    points = figures.principal_components(codes)
    assert points.shape == (300, 2)
    # The first axis is the line (correlation with t near 1; the noise of s.d. 0.1 against 10 bounds
    # the loss at about 1e-4), the second holds only noise (variance near 0.1^2).
    assert abs(np.corrcoef(points[:, 0], t)[0, 1]) > 0.999
    assert np.var(points[:, 1]) < 0.02
    assert figures.principal_components(codes[:, :1]).shape == (300, 2)  # one dimension: padded

    labels = (t > 0).astype(int)
    path = figures.pca_scatter(str(tmp_path / "pca.png"), {"content": codes, "style": codes[:, ::-1]}, labels)
    with Image.open(path) as image:
        assert image.size == (2 * 370 + 10 + 120, 360 + 34)
        colours = {colour for _, colour in image.convert("RGB").getcolors(10 ** 6)}
    assert set(figures.CLASS_COLOURS[:2]) <= colours  # both classes' points are drawn
    with pytest.raises(ValueError, match="panels\\['style'\\]: 5 codes for 300 labels"):
        figures.pca_scatter(str(tmp_path / "x.png"), {"style": codes[:5]}, labels)


def test_the_style_kl_weight_weights_only_the_style_term_of_the_loss():
    model = tiny_mlvae(kl_style_weight=3.0)
    losses, _ = model.compute_losses(mixed_size_batch())
    # The loss is the sum of the reported terms with the style KL tripled (float32 sums of ~50 nats).
    expected = losses["reconstruction"] + losses["kl_content"] + 3.0 * losses["kl_style"]
    np.testing.assert_allclose(float(losses["loss"]), float(expected), rtol=1e-5)
    assert float(losses["kl_style"]) > 0.01  # so the weight makes a difference
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="kl_style_weight: expected a positive number"):
            tiny_mlvae(kl_style_weight=bad)
