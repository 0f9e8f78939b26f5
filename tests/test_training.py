"""The training loop: checkpoints, resume (after a finished or a killed run), divergence, bad config."""
import json
import os

import keras
import numpy as np
import pytest

from tfssvae import data as data_lib
import tensorflow as tf

from tfssvae import metrics, models, training

SHAPE = (8, 8, 1)


def tiny_problem(n=40, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(n, *SHAPE)).astype("float32")
    labels = (np.arange(n) % 4).astype("int32")
    labelled = data_lib.balanced_labelled_indices(labels, 8, 4, seed)
    return images, labels, labelled


def tiny_model():
    keras.utils.set_random_seed(0)
    return models.M2(SHAPE, 4, latent_dim=2, hidden_units=(8,))


CONFIG = training.TrainConfig(epochs=2, learning_rate=1e-3, checkpoint_every=2, log_every=1, verbose=1)


def batches_of(images, labels, labelled):
    return data_lib.SemiSupervisedSource(images, labels, labelled, batch_size=10, labelled_batch_size=4, seed=0)


def weights_of(model):
    return [w.numpy().copy() for w in model.weights]


def test_train_writes_checkpoints_summaries_and_a_summary(tmp_path):
    images, labels, labelled = tiny_problem()
    summary = training.train(tiny_model(), batches_of(images, labels, labelled), str(tmp_path), CONFIG,
                             validation=(images[:8], labels[:8]))
    steps_per_epoch = data_lib.steps_per_epoch(40, 10, 4)
    assert summary["steps"] == 2 * steps_per_epoch
    assert summary["train_examples_per_second"] > 0
    assert set(summary["final_losses"]) == set(models.M2.loss_names) | {"error"}
    assert os.listdir(tmp_path / "tensorboard" / "train")
    assert json.loads((tmp_path / "train_summary.json").read_text())["steps"] == summary["steps"]


def test_keep_best_ends_with_the_weights_of_the_lowest_validation_error(tmp_path):
    images, labels, labelled = tiny_problem()
    validation = (images[:16], labels[:16])
    config = training.TrainConfig(**{**CONFIG.__dict__, "epochs": 4})
    model = tiny_model()
    summary = training.train(model, batches_of(images, labels, labelled), str(tmp_path), config, validation)
    # The model holds the best epoch's weights: its error is the reported best, exactly
    # (the same images through the same weights), and no later epoch's weights beat it.
    assert metrics.classification_error(model, *validation) == summary["validation_error"]
    assert 1 <= summary["best_epoch"] <= 4
    last = tiny_model()
    last.build_variables()
    tf.train.Checkpoint(model=last).restore(tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))).expect_partial()
    assert metrics.classification_error(last, *validation) >= summary["validation_error"]


def test_rerun_restores_exactly_and_continues_from_the_saved_step(tmp_path, capsys):
    images, labels, labelled = tiny_problem()
    one_epoch = training.TrainConfig(**{**CONFIG.__dict__, "epochs": 1})
    first = tiny_model()
    done = training.train(first, batches_of(images, labels, labelled), str(tmp_path), one_epoch)
    trained = weights_of(first)

    # A fresh model given the same directory restores the very same weights.
    again = tiny_model()
    assert not all(np.array_equal(a, b) for a, b in zip(trained, weights_of(again)))
    training.train(again, batches_of(images, labels, labelled), str(tmp_path), one_epoch)
    assert all(np.array_equal(a, b) for a, b in zip(trained, weights_of(again)))
    assert "already finished" in capsys.readouterr().out

    # Asking for more epochs continues from the saved step.
    more = training.train(tiny_model(), batches_of(images, labels, labelled), str(tmp_path), CONFIG)
    assert f"at step {done['steps']}" in capsys.readouterr().out
    assert more["steps"] == 2 * done["steps"]


def test_a_killed_run_resumes_mid_epoch(tmp_path, monkeypatch, capsys):
    images, labels, labelled = tiny_problem()
    batches = batches_of(images, labels, labelled)
    real_multi_step = training._multi_step

    def dies_before_the_fourth_step(model, jit_compile, strategy=None, after_step=None):
        step_fn, calls = real_multi_step(model, jit_compile, strategy, after_step), []

        def run(iterator, num_steps):
            calls.append(int(num_steps))
            if sum(calls) > 3:
                raise KeyboardInterrupt("killed")
            return step_fn(iterator, num_steps)
        return run

    monkeypatch.setattr(training, "_multi_step", dies_before_the_fourth_step)
    with pytest.raises(KeyboardInterrupt):
        training.train(tiny_model(), batches, str(tmp_path), CONFIG)
    monkeypatch.setattr(training, "_multi_step", real_multi_step)

    summary = training.train(tiny_model(), batches_of(images, labels, labelled), str(tmp_path), CONFIG)
    # checkpoint_every=2: the run died after step 3, so the last checkpoint holds step 2.
    assert "at step 2" in capsys.readouterr().out
    assert summary["steps"] == 2 * data_lib.steps_per_epoch(40, 10, 4)


def test_a_time_limit_stops_with_a_checkpoint_and_a_rerun_finishes(tmp_path, capsys):
    images, labels, labelled = tiny_problem()
    # A limit far below one call's time: the loop stops after its first call (one step).
    one_step = training.TrainConfig(**{**CONFIG.__dict__, "time_limit_minutes": 1e-9})
    stopped = training.train(tiny_model(), batches_of(images, labels, labelled), str(tmp_path), one_step)
    assert stopped["time_limit_reached"] and stopped["steps"] == 1
    assert "time limit" in capsys.readouterr().out
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("-1")
    finished = training.train(tiny_model(), batches_of(images, labels, labelled), str(tmp_path), CONFIG)
    assert "at step 1" in capsys.readouterr().out
    assert not finished["time_limit_reached"] and finished["steps"] == 2 * data_lib.steps_per_epoch(40, 10, 4)


@pytest.mark.parametrize("keep, expected", [(0, 4), (2, 2)])
def test_keep_checkpoints_zero_keeps_every_checkpoint(tmp_path, keep, expected):
    images, labels, labelled = tiny_problem()
    config = training.TrainConfig(**{**CONFIG.__dict__, "epochs": 4, "checkpoint_every": 1000,
                                     "keep_checkpoints": keep})
    training.train(tiny_model(), batches_of(images, labels, labelled), str(tmp_path), config)
    # checkpoint_every beyond the run: one checkpoint at the end of each of the 4 epochs.
    kept = tf.train.get_checkpoint_state(str(tmp_path / "checkpoints")).all_model_checkpoint_paths
    steps = data_lib.steps_per_epoch(40, 10, 4)
    assert [int(p.rsplit("-", 1)[1]) for p in kept] == [steps * e for e in range(5 - expected, 5)]


def test_divergence_stops_with_a_clear_error_and_keeps_the_good_checkpoint(tmp_path):
    images, labels, labelled = tiny_problem()
    one_epoch = training.TrainConfig(**{**CONFIG.__dict__, "epochs": 1})
    model = tiny_model()
    done = training.train(model, batches_of(images, labels, labelled), str(tmp_path), one_epoch)
    good = weights_of(model)
    model.classification_weight = float("nan")  # every later loss is NaN
    with pytest.raises(FloatingPointError, match=f"diverged at step {done['steps'] + 1}"):
        training.train(model, batches_of(images, labels, labelled), str(tmp_path), CONFIG)
    restored = tiny_model()
    training.train(restored, batches_of(images, labels, labelled), str(tmp_path), one_epoch)
    assert all(np.array_equal(a, b) for a, b in zip(good, weights_of(restored)))


def test_non_finite_images_are_refused_before_training(tmp_path):
    images, labels, labelled = tiny_problem()
    images[3, 1, 1, 0] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        training.train(tiny_model(), batches_of(images, labels, labelled), str(tmp_path), CONFIG)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"epochs": 0}, "epochs"),
        ({"checkpoint_every": 0}, "checkpoint_every"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"time_limit_minutes": 0.0}, "time_limit_minutes: expected a positive number of minutes"),
        ({"time_limit_minutes": -5.0}, "time_limit_minutes"),
        ({"keep_checkpoints": -1}, "keep_checkpoints"),
    ],
)
def test_bad_config_is_a_value_error(changes, match):
    with pytest.raises(ValueError, match=match):
        training.TrainConfig(**{**CONFIG.__dict__, **changes})


def test_xla_compiled_steps_train(tmp_path):
    images, labels, labelled = tiny_problem()
    config = training.TrainConfig(**{**CONFIG.__dict__, "epochs": 1, "jit_compile": True})
    keras.utils.set_random_seed(0)
    model = models.SSDGMMnist(SHAPE, 4, latent_dim=2, hidden_units=(8,))
    summary = training.train(model, batches_of(images, labels, labelled), str(tmp_path), config)
    assert np.isfinite(summary["final_losses"]["loss"])


def test_xla_is_refused_clearly_for_m2s_data_dependent_rows(tmp_path):
    images, labels, labelled = tiny_problem()
    config = training.TrainConfig(**{**CONFIG.__dict__, "epochs": 1, "jit_compile": True})
    with pytest.raises(ValueError, match="jit_compile: M2's step computes a number of rows"):
        training.train(tiny_model(), batches_of(images, labels, labelled), str(tmp_path), config)


def test_cosine_decay_runs_adam_from_the_learning_rate_down_to_zero_over_the_epochs(tmp_path):
    images, labels, labelled = tiny_problem()
    batches = batches_of(images, labels, labelled)
    config = training.TrainConfig(**{**CONFIG.__dict__, "learning_rate_decay": "cosine", "verbose": 0})
    model = tiny_model()
    training.train(model, batches, str(tmp_path), config)
    total = config.epochs * batches.steps_per_epoch
    schedule = training.learning_rate_schedule(config, batches.steps_per_epoch)
    # Half a cosine from 1e-3 at step 0 through 5e-4 halfway to 0 at the last step
    # (float32 arithmetic: a relative tolerance of 1e-5 is far above its rounding).
    for step, expected in ((0, 1e-3), (total / 2, 5e-4), (total, 0.0)):
        np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5, atol=1e-9)
    # The optimizer used it: after the run its current step size is the end of the curve
    # (a constant step would still be 1e-3).
    assert float(model.optimizer.iterations) == total
    np.testing.assert_allclose(float(model.optimizer.learning_rate), 0.0, atol=1e-9)


def test_staircase_decay_multiplies_the_step_by_the_factor_every_interval(tmp_path):
    images, labels, labelled = tiny_problem()
    batches = batches_of(images, labels, labelled)
    config = training.TrainConfig(**{**CONFIG.__dict__, "learning_rate_decay": "staircase", "verbose": 0,
                                     "learning_rate_decay_every": 4, "learning_rate_decay_factor": 0.5})
    model = tiny_model()
    training.train(model, batches, str(tmp_path), config)
    schedule = training.learning_rate_schedule(config, batches.steps_per_epoch)
    # Flat within an interval, halved at each multiple of 4 (relative tolerance as above).
    for step, expected in ((0, 1e-3), (3, 1e-3), (4, 5e-4), (7, 5e-4), (8, 2.5e-4)):
        np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5)
    total = config.epochs * batches.steps_per_epoch
    np.testing.assert_allclose(float(model.optimizer.learning_rate), 1e-3 * 0.5 ** (total // 4), rtol=1e-5)


@pytest.mark.parametrize("every, factor, match", [
    (None, 0.3, "learning_rate_decay_every: the staircase needs a positive number of steps"),
    (0, 0.3, "learning_rate_decay_every: the staircase needs a positive number of steps"),
    (100, 1.5, r"learning_rate_decay_factor: the staircase needs a factor in \(0, 1\]"),
    (100, None, r"learning_rate_decay_factor: the staircase needs a factor in \(0, 1\]"),
])
def test_a_staircase_without_its_interval_or_factor_is_refused(every, factor, match):
    with pytest.raises(ValueError, match=match):
        training.TrainConfig(learning_rate_decay="staircase", learning_rate_decay_every=every,
                             learning_rate_decay_factor=factor)


def test_an_unknown_learning_rate_decay_is_refused():
    with pytest.raises(ValueError, match="learning_rate_decay: expected one of"):
        training.TrainConfig(learning_rate_decay="linear")


def test_weight_average_follows_the_closed_form():
    # Values 1, 2, ..., 5 assigned before each update, average starting at 0; the decay
    # after n updates is min(0.9, (1 + n) / (10 + n)).  Float32 arithmetic over 5 updates of
    # numbers below 5: a relative tolerance of 1e-6 is far above its rounding.
    variable = tf.Variable([0.0, 10.0])
    average = training.WeightAverage([variable], decay=0.9)
    expected = np.array([0.0, 10.0])
    for n, value in enumerate(range(1, 6)):
        variable.assign([value, -value])
        average.update()
        decay = min(0.9, (1 + n) / (10 + n))
        expected = decay * expected + (1 - decay) * np.array([value, -value])
    np.testing.assert_allclose(average.averages[0].numpy(), expected, rtol=1e-6)
    assert int(average.updates.numpy()) == 5
    average.swap()
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(average.averages[0].numpy(), [5.0, -5.0])


def test_a_run_with_ema_ends_with_the_average_and_a_resume_continues_it(tmp_path):
    images, labels, labelled = tiny_problem()
    batches = batches_of(images, labels, labelled)
    config = training.TrainConfig(**{**CONFIG.__dict__, "ema_decay": 0.5, "keep_best": False, "verbose": 0})
    model = tiny_model()
    training.train(model, batches, str(tmp_path), config)
    total = config.epochs * batches.steps_per_epoch
    # The checkpoint holds the raw weights and the averages apart: the model ends with
    # the averages (exactly: they are copied), which differ from the raw weights.
    reader = tf.train.load_checkpoint(str(tmp_path / "checkpoints"))
    assert reader.get_tensor("average_updates/.ATTRIBUTES/VARIABLE_VALUE") == total
    averages = [reader.get_tensor(f"averages/{i}/.ATTRIBUTES/VARIABLE_VALUE")
                for i in range(len(model.trainable_variables))]
    for variable, average in zip(model.trainable_variables, averages):
        np.testing.assert_array_equal(variable.numpy(), average)
    raw = tiny_model()
    raw.build_variables()
    tf.train.Checkpoint(model=raw).restore(tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))).expect_partial()
    # Adam's steps of 1e-3 over 8 steps move the raw weights away from an average that
    # halves the distance each step by far more than float32 rounding.
    assert max(np.abs(w.numpy() - a).max() for w, a in zip(raw.trainable_variables, averages)) > 1e-4
    # Two more epochs from the checkpoint keep counting the same average's updates.
    more = training.TrainConfig(**{**config.__dict__, "epochs": 4})
    training.train(tiny_model(), batches, str(tmp_path), more)
    reader = tf.train.load_checkpoint(str(tmp_path / "checkpoints"))
    assert reader.get_tensor("average_updates/.ATTRIBUTES/VARIABLE_VALUE") == 2 * total


def test_a_bad_ema_decay_is_refused():
    with pytest.raises(ValueError, match=r"ema_decay: expected a number in \[0, 1\)"):
        training.TrainConfig(ema_decay=1.0)
