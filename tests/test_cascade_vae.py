"""CascadeVAE: the cascading KL schedule, batched unaries, the flow inside tf.function and across replicas."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfssvae import assignment, configs, experiment, models
from tfssvae.data import sprites

SMALL = dict(filters=(4, 4, 4, 4), dense_units=16, decoder_filters=(4, 4, 4))


def small_model(**kwargs):
    keras.utils.set_random_seed(0)
    return models.CascadeVAE(sprites.IMAGE_SHAPE, 3, **{**SMALL, **kwargs})


def sprite_batch(n=6, seed=0):
    return next(iter(sprites.sprites_dataset(n, seed=seed, num_batches=1)))


def official_relieved(iteration, stage_length, ntime, nconti):
    """Relieved dims in the official run_batch: stage s = iteration // stage_length; before stage
    ntime (when d starts) min(s + 1, nconti), from it on min(s, nconti)."""
    stage = iteration // stage_length
    return min(stage + 1, nconti) if stage < ntime else min(stage, nconti)


@pytest.mark.parametrize("latent_dim, ntime", [(6, 4), (6, 0), (3, 5), (4, 2)])
def test_the_default_schedule_is_the_official_one(latent_dim, ntime):
    model = small_model(latent_dim=latent_dim, relieve_every=3, assign_start=3 * ntime, beta_h=10.0, beta_l=0.1)
    for iteration in range(0, 40):
        weights, count = model.kl_weights(iteration)
        relieved = official_relieved(iteration, 3, ntime, latent_dim)
        assert int(count) == relieved, iteration
        np.testing.assert_allclose(weights, [0.1] * relieved + [10.0] * (latent_dim - relieved))


def test_the_paper_schedule_relieves_at_0_20k_40k_60k_100k_120k():
    model = small_model()  # defaults: 6 dims, stages of 20k, d from 80k
    assert model.get_config()["relieve_at"] == [0, 20000, 40000, 60000, 100000, 120000]
    assert [int(model.kl_weights(t)[1]) for t in (0, 79999, 80000, 99999, 100000, 120000)] == [1, 4, 4, 4, 5, 6]


def test_an_explicit_schedule_is_kept():
    model = small_model(latent_dim=4, relieve_at=[10, 20, 30])
    assert [int(model.kl_weights(t)[1]) for t in (0, 9, 10, 25, 30, 10**9)] == [0, 0, 1, 2, 3, 3]


def test_the_network_is_the_official_one():
    model = models.CascadeVAE(sprites.IMAGE_SHAPE, 3)
    convs = [layer for layer in model.encoder.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size, c.strides) for c in convs] == [(f, (4, 4), (2, 2)) for f in (32, 32, 64, 64)]
    dense = [layer for layer in model.encoder.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [256, 12]
    assert model.decoder_input.kernel.shape == (6 + 3, 256)
    deconvs = [layer for layer in model.decoder_body.layers if isinstance(layer, keras.layers.Conv2DTranspose)]
    assert [(c.filters, c.kernel_size, c.strides) for c in deconvs] == [(f, (4, 4), (2, 2)) for f in (64, 32, 32, 1)]
    assert deconvs[-1].activation is keras.activations.linear
    assert [d.units for d in model.decoder_body.layers if isinstance(d, keras.layers.Dense)] == [4 * 4 * 64]
    assert model.decoder_body.output_shape == (None, 64, 64, 1)
    # Every kernel, and nothing else, carries the L2 penalty 2e-5 * sum(w ** 2).
    kernels = [v for v in model.trainable_variables if v.name == "kernel"]
    assert len(model.losses) == len(kernels) == 12
    expected = 2e-5 * sum(float(tf.reduce_sum(tf.square(v))) for v in kernels)
    assert float(tf.add_n(model.losses)) == pytest.approx(expected, rel=1e-5)


def test_unaries_equal_one_decoder_pass_per_value():
    model = small_model()
    x = sprite_batch()["x"]
    z = tf.random.normal([6, 6])
    unaries = model.unaries(x, z).numpy()
    for k in range(3):
        code = tf.one_hot(tf.fill([6], k), 3)
        expected = -model.likelihood(model.decode_logits(z, code)).log_prob(x).numpy()
        # float32 sums of 4,096 pixel terms in different orders: ~1e-6 relative.
        np.testing.assert_allclose(unaries[:, k], expected, rtol=1e-5)
    assert np.ptp(unaries, axis=1).min() > 1e-3  # the code matters, so the comparison is not vacuous


class FixedNoise(models.CascadeVAE):
    noise = None

    def sample_noise(self, shape):
        return super().sample_noise(shape) if self.noise is None else tf.constant(self.noise)


def naive_step(model, x, noise, kl_weights, warm_up=False):
    """The step as the paper states it, K-fold and with gradient through all K decoder passes:
    z repeated K times through the plain dense over the concatenation [z, e_k], the unaries of
    every value, d by the flow, the loss at the chosen values; loss and gradients.  ``warm_up``:
    before d is learned, one decoder pass at the zero code (d is then None)."""
    K, batch = model.discrete_size, x.shape[0]
    with tf.GradientTape() as tape:
        q = model.posterior_z(model.encoder(x, training=True))
        z = q.mean() + q.stddev() * noise
        codes = tf.zeros([batch, K]) if warm_up else tf.tile(tf.eye(K), [batch, 1])
        inputs = tf.concat([z if warm_up else tf.repeat(z, K, axis=0), codes], axis=1)
        hidden = tf.nn.relu(inputs @ model.decoder_input.kernel + model.decoder_input.bias)
        log_p = model.likelihood(model.decoder_body(hidden)).log_prob(x if warm_up else tf.repeat(x, K, axis=0))
        if warm_up:
            reconstruction, d = -log_p, None
        else:
            unaries = -tf.reshape(log_p, [batch, K])
            d = assignment.assign(unaries.numpy(), model.get_config()["pair_penalty"])
            reconstruction = tf.gather(unaries, d, batch_dims=1)
        kl = tfp.distributions.kl_divergence(tfp.distributions.Normal(q.mean(), q.stddev()),
                                             tfp.distributions.Normal(0.0, 1.0))
        kernels = [v for v in model.trainable_variables if v.name == "kernel"]
        l2 = 2e-5 * tf.add_n([tf.reduce_sum(tf.square(v)) for v in kernels])
        loss = tf.reduce_mean(reconstruction + tf.reduce_sum(kl * kl_weights, axis=1)) + l2
    return loss, tape.gradient(loss, model.trainable_variables), d


@pytest.mark.parametrize("warm_up", [False, True])
def test_the_fast_step_equals_the_naive_k_fold_step(warm_up):
    keras.utils.set_random_seed(1)
    # A pair penalty large against the unaries' spread forces a balanced code, so several values are chosen.
    model = FixedNoise(sprites.IMAGE_SHAPE, 3, relieve_at=[0, 0, 5], assign_start=100 if warm_up else 0,
                       pair_penalty=50.0, **SMALL)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.build_variables()
    x = sprite_batch(8)["x"]
    model.noise = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")

    def fast_step():
        with tf.GradientTape() as tape:
            losses, _ = model.compute_losses({"x": x}, training=True)
        return losses["loss"], tape.gradient(losses["loss"], model.trainable_variables)

    loss, naive, d = naive_step(model, x, model.noise, tf.constant([0.1, 0.1, 10.0, 10.0, 10.0, 10.0]), warm_up)
    assert warm_up or len(set(d.tolist())) > 1
    # Eager, and as training runs it: inside tf.function, the decoder's pass at the chosen codes
    # replayed from the unaries' stored pass (networks.replay) within a tf.cond.
    for fast_loss, fast in (fast_step(), tf.function(fast_step)()):
        # float32 with differently ordered sums (split vs concatenated kernel, broadcast vs repeated
        # images): they agree to ~1e-6 relative (measured 1.3e-6 on the gradients); 1e-4 is margin across
        # CPUs, while a wrong code, weight or missing term moves the loss by > 1e-2 relative and the
        # gradients by order one.
        assert float(fast_loss) == pytest.approx(float(loss), rel=1e-4)
        for variable, got, want in zip(model.trainable_variables, fast, naive):
            scale = float(tf.reduce_max(tf.abs(want)))
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale, err_msg=variable.path)


def test_the_step_backpropagates_once_through_each_kernel():
    # The gradient graph of a step that may assign d holds one kernel gradient per conv and
    # transposed conv (4 + 4): none through the K unary passes, including the zeros a tape sends
    # through a tf.cond whose outputs it differentiates (which cost 40 % of the step's speed).
    model = small_model(assign_start=10)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.build_variables()
    graph = tf.function(lambda batch: model.compute_gradients(batch)[0]).get_concrete_function(
        sprite_batch(8)).graph.as_graph_def()
    nodes = list(graph.node) + [node for function in graph.library.function for node in function.node_def]
    convs = [layer for layer in model._flatten_layers()
             if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))]
    assert len(convs) == 8
    assert sum(node.op == "Conv2DBackpropFilter" for node in nodes) == len(convs)


def test_d_from_labels_decodes_at_the_labels_after_assign_start_only():
    # The diagnostic of issue 9: the reconstruction is -log p(x | z, e_y) with y the batch's
    # shapes from assign_start on, and at the zero code before it (no assignment either way).
    batch = sprite_batch(8)
    x, y = batch["x"], batch["y"]
    assert len(set(np.asarray(y).tolist())) > 1  # several shapes, so a wrong code would show
    noise = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
    for assign_start, codes in ((0, tf.one_hot(y, 3)), (10, tf.zeros([8, 3]))):
        keras.utils.set_random_seed(1)
        model = FixedNoise(sprites.IMAGE_SHAPE, 3, relieve_at=[0], assign_start=assign_start, d_from_labels=True,
                           **SMALL)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        model.build_variables()
        model.noise = noise
        losses, _ = model.compute_losses({"x": x, "y": y}, training=True)
        q = model.posterior_z(model.encoder(x, training=True))
        expected = -model.likelihood(model.decode_logits(q.mean() + q.stddev() * noise, codes)).log_prob(x)
        # The same ops on the same inputs, summed in the same order: equal to float32 rounding.
        assert float(losses["reconstruction"]) == pytest.approx(float(tf.reduce_mean(expected)), rel=1e-6)
        flow = FixedNoise(sprites.IMAGE_SHAPE, 3, relieve_at=[0], assign_start=assign_start, **SMALL)
        flow.compile(optimizer=keras.optimizers.Adam(1e-3))
        flow.build_variables()
        flow.set_weights(model.get_weights())
        flow.noise = noise
        # Against the assignment's choice the labels' reconstruction is worse (d minimises it)
        # after assign_start, and the same before it.
        other = float(flow.compute_losses({"x": x, "y": y}, training=True)[0]["reconstruction"])
        if assign_start == 0:
            assert float(losses["reconstruction"]) > other + 1e-3
        else:
            assert float(losses["reconstruction"]) == pytest.approx(other, rel=1e-6)
    with pytest.raises(ValueError, match="d_from_labels: d is never used when assign_start is None"):
        small_model(assign_start=None, d_from_labels=True)


def test_bfloat16_steps_keep_float32_losses_and_close_unaries():
    float32 = small_model(assign_start=0)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = small_model(assign_start=0)
        model.set_weights(float32.get_weights())
        x, z = sprite_batch(8)["x"], tf.random.normal([8, 6])
        # bfloat16 rounds every activation to 8 significant bits (2^-9 relative); the rounding errors of
        # 4,096 pixel terms largely cancel in the sum (measured 2e-5 relative); 1e-3 leaves margin and
        # still catches a density computed in bfloat16 or a lost cast.
        np.testing.assert_allclose(model.unaries(x, z), float32.unaries(x, z), rtol=1e-3)
        assert model.decoder_body.layers[-1].compute_dtype == "bfloat16"
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        model.build_variables()
        logs = tf.function(model.train_step)({"x": x})
        assert logs["loss"].dtype == tf.float32 and np.isfinite(float(logs["loss"]))
        assert all(v.dtype == "float32" for v in model.trainable_variables)
    finally:
        keras.mixed_precision.set_global_policy(previous)


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


def test_without_the_assignment_d_is_always_zero():
    """The ablation assign_start=None: the loss is the decoder's at the zero code, encode gives d = 0."""
    model = FixedNoise(sprites.IMAGE_SHAPE, 3, relieve_at=[0, 0, 0], assign_start=None, **SMALL)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.build_variables()
    x = sprite_batch(8)["x"]
    model.noise = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
    losses, _ = model.compute_losses({"x": x}, training=True)
    q = model.posterior_z(model.encoder(x))
    z = q.mean() + q.stddev() * model.noise
    expected = -model.likelihood(model.decode_logits(z, tf.zeros([8, 3]))).log_prob(x).numpy().mean()
    # The same ops on the same inputs: equal up to float32 summation order.
    assert float(losses["reconstruction"]) == pytest.approx(expected, rel=1e-6)
    # ... and not the best code's cost, which a trained d would give.
    assert float(tf.reduce_mean(tf.reduce_min(model.unaries(x, z), axis=1))) < expected - 1e-3
    np.testing.assert_array_equal(model.encode(x)["d"], np.zeros(8))


@pytest.mark.parametrize("variant", ["cpu", "cpu_no_cascade", "cpu_no_assignment"])
def test_the_cpu_variants_fit_their_budget(variant):
    config = configs.get(f"cascade_vae:{variant}")
    experiment.validate(config)
    assert config.time_limit_minutes == 45.0 and config.keep_checkpoints == 0
    model = small_model(**{k: v for k, v in config.model.to_dict().items() if k in ("relieve_at", "assign_start",
                                                                                     "relieve_every")})
    weights, relieved = model.kl_weights(tf.constant(0, tf.int64))
    # At iteration 0 the cascade relieves one dimension; the beta-VAE ablation all six.
    assert int(relieved) == (6 if variant == "cpu_no_cascade" else 1)
    assert (model.get_config()["assign_start"] is None) == (variant == "cpu_no_assignment")


@pytest.mark.parametrize("options, match", [
    (dict(latent_dim=2, relieve_at=[1, 2, 3]), "relieve_at"), (dict(discrete_size=1), "discrete_size"),
    (dict(solver="simplex"), "solver"), (dict(relieve_at=[5, 2]), "non-decreasing"), (dict(beta_h=-1.0), "beta_h"),
    (dict(relieve_every=0), "relieve_every"), (dict(l2_weight=-1.0), "l2_weight"),
    (dict(decoder_filters=(4,) * 6), "divisible"),
])
def test_bad_settings_are_value_errors(options, match):
    with pytest.raises(ValueError, match=match):
        small_model(**options)


def test_cascade_needs_sprites_and_no_xla(tmp_path):
    with pytest.raises(ValueError, match="sprites"):
        experiment.run(configs.get("cascade_vae", {"dataset": "digits", "model_dir": str(tmp_path)}))
    with pytest.raises(ValueError, match="jit_compile"):
        experiment.run(configs.get("cascade_vae", {"jit_compile": True, "model_dir": str(tmp_path)}))


def test_a_schedule_that_does_not_fit_in_the_run_is_refused():
    experiment.validate(configs.get("cascade_vae"))  # the official 300k iterations hold the whole schedule
    short = {"epochs": 2, "steps_per_epoch": 10}
    with pytest.raises(ValueError, match=r"model.assign_start: .* iteration 80000, but the run has 20 steps"):
        experiment.validate(configs.get("cascade_vae", short))
    # Stages of 10 with d from 15: dims at 0, 10, then (20 goes to d) 30.
    with pytest.raises(ValueError, match=r"model.relieve_every: .* relieve dimension 3 at iteration 30"):
        experiment.validate(configs.get("cascade_vae", {**short, "model.relieve_every": 10, "model.assign_start": 15}))
    with pytest.raises(ValueError, match=r"model.relieve_at relieve dimension 2 at iteration 25"):
        experiment.validate(configs.get("cascade_vae", {**short, "model.relieve_at": (0, 25), "model.assign_start": 5}))
    fits = {**short, "model.relieve_at": (0, 19), "model.assign_start": 19}
    experiment.validate(configs.get("cascade_vae", fits))
    with pytest.raises(ValueError, match=r"factor_vae_votes: expected at least one vote per factor \(5"):
        experiment.validate(configs.get("cascade_vae", {**fits, "factor_vae_votes": (4, 100)}))
    with pytest.raises(ValueError, match=r"factor_vae_samples_per_value: expected 0 .* batch of 64, received 10"):
        experiment.validate(configs.get("cascade_vae", {**fits, "factor_vae_samples_per_value": 10}))


REPLICAS = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from tfssvae import models
from tfssvae.data import sprites
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = models.CascadeVAE((64, 64, 1), 3, filters=(4, 4, 4, 4), dense_units=16,
                              decoder_filters=(4, 4, 4), relieve_every=1, assign_start=0)
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
        "dataset": "sprites", "epochs": 2, "steps_per_epoch": 3, "keep_checkpoints": 0, "batch_size": 8, "model.relieve_at": (0, 1, 2),
        "model.assign_start": 2, "eval_samples": 64, "factor_vae_votes": (10, 5), "factor_vae_samples_per_value": 64, "model_dir": str(tmp_path / "m"),
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
    # d against the shapes: one row per value of d, one column per shape, every sample counted once.
    table = np.array(report["d_by_shape"])
    assert table.shape == (3, 3) and table.sum() == 64
    assert set(report["d_information"]) == {"shape", "scale", "orientation", "x", "y"}

    curve = subprocess.run(
        [sys.executable, "-m", "binaries.evaluate", f"--model_dir={tmp_path / 'm'}", "--dataset=sprites",
         "--eval_samples=64", "--factor_vae_votes=10,5", "--learning_curve", f"--output_dir={tmp_path / 'f'}"],
        capture_output=True, text=True, env=env, timeout=300,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert curve.returncode == 0, curve.stderr[-3000:]
    points = json.loads((tmp_path / "f" / "learning_curve.json").read_text())
    assert [p["step"] for p in points] == [3, 6]  # every epoch's checkpoint (keep_checkpoints=0)
    # The last point is the final weights: the same metrics as the plain evaluation, same seed.
    for key in ("factor_vae_score", "mig", "shape_accuracy"):
        assert points[-1][key] == pytest.approx(report[key], abs=1e-6)
    assert (tmp_path / "f" / "learning_curve.png").stat().st_size > 1000

    negative = subprocess.run(
        [sys.executable, "-m", "binaries.evaluate", f"--model_dir={tmp_path / 'm'}", "--dataset=sprites",
         "--learning_curve", "--curve_points=-1"],
        capture_output=True, text=True, env=env, timeout=300,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert negative.returncode == 2 and "--curve_points: expected 0 (all) or a positive number" in negative.stderr
    assert "Traceback" not in negative.stderr
