"""CascadeVAE: the cascading KL schedule, batched unaries, the flow inside tf.function and across replicas."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssvae import assignment, configs, experiment, models
from tfssvae.data import sprites

SMALL = dict(filters=(4, 4, 4, 4), dense_units=16)


def small_model(**kwargs):
    keras.utils.set_random_seed(0)
    return models.CascadeVAE(sprites.IMAGE_SHAPE, 3, **{**SMALL, **kwargs})


def sprite_batch(n=6, seed=0):
    return next(iter(sprites.sprites_dataset(n, seed=seed, num_batches=1)))


def test_kl_weights_relieve_one_more_dimension_at_each_step_of_the_schedule():
    model = small_model(latent_dim=4, relieve_at=[10, 20, 30], beta_h=10.0, beta_l=0.1)
    for iteration, relieved in ((0, 0), (9, 0), (10, 1), (25, 2), (30, 3), (10**9, 3)):
        weights, count = model.kl_weights(iteration)
        assert int(count) == relieved
        np.testing.assert_allclose(weights, [0.1] * relieved + [10.0] * (4 - relieved))
    default = small_model(latent_dim=6, relieve_every=20000)
    assert default.get_config()["relieve_at"] == [20000 * i for i in range(1, 7)]


def test_unaries_equal_one_decoder_pass_per_value():
    model = small_model()
    x = sprite_batch()["x"]
    z = tf.random.normal([6, 6])
    unaries = model.unaries(x, z).numpy()
    for k in range(3):
        code = tf.one_hot(tf.fill([6], k), 3)
        expected = -model.likelihood(model.decoder_network([z, code])).log_prob(x).numpy()
        np.testing.assert_allclose(unaries[:, k], expected, rtol=1e-5)


def test_the_flow_runs_inside_tf_function_and_matches_the_solver():
    model = small_model()
    unaries = tf.constant(np.random.default_rng(0).uniform(size=(20, 3)).astype("float32"))
    solved = tf.function(model._solve)(unaries).numpy()
    expected = assignment.assign(unaries.numpy(), 0.001)
    np.testing.assert_allclose(assignment.objective(unaries.numpy(), solved, 0.001),
                               assignment.objective(unaries.numpy(), expected, 0.001), rtol=1e-9)


@pytest.mark.parametrize("assign_start", [0, 1000])
def test_training_steps_before_and_after_the_warm_up(assign_start):
    model = small_model(relieve_every=1, assign_start=assign_start)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.build_variables()
    step = tf.function(model.train_step)
    batch = sprite_batch(8)
    losses = [float(step(batch)["loss"]) for _ in range(3)]
    assert np.isfinite(losses).all() and int(model.optimizer.iterations.numpy()) == 3


def test_encode_picks_the_cheapest_code():
    model = small_model()
    x = sprite_batch()["x"]
    code = model.encode(x)
    np.testing.assert_array_equal(code["d"], np.argmin(model.unaries(x, code["mean"]).numpy(), axis=1))
    assert model.generate(code["mean"], tf.cast(code["d"], tf.int32))["images"].shape == (6, 64, 64, 1)


@pytest.mark.parametrize("options, match", [
    (dict(latent_dim=2, relieve_at=[1, 2, 3]), "relieve_at"), (dict(discrete_size=1), "discrete_size"),
    (dict(solver="simplex"), "solver"), (dict(relieve_at=[5, 2]), "non-decreasing"), (dict(beta_h=-1.0), "beta_h"),
])
def test_bad_settings_are_value_errors(options, match):
    with pytest.raises(ValueError, match=match):
        small_model(**options)


def test_cascade_needs_sprites_and_no_xla(tmp_path):
    with pytest.raises(ValueError, match="sprites"):
        experiment.run(configs.get("cascade_vae", {"dataset": "digits", "model_dir": str(tmp_path)}))
    with pytest.raises(ValueError, match="jit_compile"):
        experiment.run(configs.get("cascade_vae", {"jit_compile": True, "model_dir": str(tmp_path)}))


REPLICAS = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from tfssvae import models
from tfssvae.data import sprites
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = models.CascadeVAE((64, 64, 1), 3, filters=(4, 4, 4, 4), dense_units=16, relieve_every=1, assign_start=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.build_variables()
batches = strategy.experimental_distribute_dataset(sprites.sprites_dataset(8, seed=0, num_batches=3))
step = tf.function(lambda b: strategy.run(model.train_step, args=(b,)))
for batch in batches:
    logs = step(batch)
print("REPLICAS", strategy.num_replicas_in_sync, "LOSS", float(strategy.reduce("MEAN", logs["loss"], axis=None)),
      "ITERATIONS", int(model.optimizer.iterations.numpy()))
"""


def test_the_assignment_works_with_batches_split_across_replicas():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", REPLICAS], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    words = done.stdout.split()
    assert words[words.index("REPLICAS") + 1] == "2"
    assert np.isfinite(float(words[words.index("LOSS") + 1]))
    assert words[words.index("ITERATIONS") + 1] == "3"


def test_cascade_runs_end_to_end(tmp_path):
    results = experiment.run(configs.get("cascade_vae", {
        "dataset": "sprites", "epochs": 1, "steps_per_epoch": 3, "batch_size": 8, "model.relieve_every": 1,
        "model.assign_start": 2, "eval_samples": 64, "factor_vae_votes": (10, 5), "model_dir": str(tmp_path / "m"),
        "export_dir": str(tmp_path / "x"), "verbose": 0}))
    for key in ("factor_vae_score", "mig", "shape_accuracy"):
        assert 0.0 <= results[key] <= 1.0
    loaded = tf.saved_model.load(results["export_path"])
    code = loaded.signatures["encode"](images=tf.zeros([2, 64, 64, 1]))
    assert code["mean"].shape == (2, 6) and code["d"].shape == (2,)

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    evaluated = subprocess.run(
        [sys.executable, "-m", "binaries.evaluate", f"--model_dir={tmp_path / 'm'}", "--dataset=sprites",
         "--eval_samples=64", "--factor_vae_votes=10,5"],
        capture_output=True, text=True, env=env, timeout=300,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads(evaluated.stdout[evaluated.stdout.index("{"):])
    assert report["model"] == "cascade_vae" and 0.0 <= report["shape_accuracy"] <= 1.0
