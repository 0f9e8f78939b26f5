"""Config files: every file and variant loads and fits its model; the train binary's --config."""
import importlib
import json
import os
import subprocess
import sys

import keras
import pytest

from tfssvae import configs, experiment, models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_module(name):
    return importlib.import_module(f"tfssvae.configs.{name}")


@pytest.mark.parametrize("name", configs.NAMES)
def test_every_config_file_loads_and_fits_its_model(name):
    config = configs.get(name)
    experiment.validate(config)
    assert config.model.name == name
    # The model section is exactly the constructor's arguments, less the data-dependent ones.
    assert set(config.model.keys()) - {"name"} == set(experiment.hyper_parameters(models.MODELS[name]))
    # The file on disk (as config_flags loads it) gives the same config.
    assert configs.load(configs.path(name)).to_dict() == config.to_dict()
    assert configs.load(f"tfssvae/configs/{name}.py").to_dict() == config.to_dict()


@pytest.mark.parametrize("name, variant", [(name, variant) for name in configs.NAMES
                                           for variant in config_module(name).VARIANTS])
def test_every_variant_loads(name, variant):
    config = configs.get(f"{name}:{variant}")
    experiment.validate(config)
    assert config.to_dict() != configs.get(name).to_dict()


@pytest.mark.parametrize("name", ["m2", "m1m2", "ssdgm_mnist", "mlvae"])
def test_fashion_mnist_variants_change_only_the_data_batches_and_step_size(name):
    """The variant changes the data and the batches; M2 and ssdgm_mnist also the learning rate."""
    base, fashion = configs.get(name).to_dict(), configs.get(f"{name}.py:fashion_mnist").to_dict()
    assert fashion["dataset"] == "idx:/usr/share/datasets/fashion-mnist"
    batches = ("batch_size", "labelled_batch_size")
    if name in ("m2", "ssdgm_mnist"):  # 364 steps on the digits take a larger step size (configs/base.py)
        batches += ("learning_rate",)
        assert (base["learning_rate"], fashion["learning_rate"]) == (2e-3, 3e-4)
    if name == "mlvae":  # 100 epochs of the 1,347 digits are 1,600 steps, 10 of Fashion-MNIST 7,500 (issue 10)
        batches += ("epochs",)
        assert (base["epochs"], fashion["epochs"]) == (100, 10)
    else:  # the semi-supervised models' measured batches (configs/base.py)
        # 200 unlabelled and a tenth of the labels (rounded up) labelled, following num_labels.
        assert (fashion["batch_size"], fashion["labelled_batch_size"]) == (210, 10)
        more = configs.get(f"{name}:fashion_mnist", {"num_labels": 995})
        assert (more.batch_size, more.labelled_batch_size) == (300, 100)
    same = {key: value for key, value in fashion.items() if key != "dataset" and key not in batches}
    assert same == {key: value for key, value in base.items() if key != "dataset" and key not in batches}


def test_defaults_that_matter():
    assert configs.get("m2").dataset == "digits"  # the plain --config runs on embedded data
    assert configs.get("cascade_vae").dataset == "sprites"
    for name in configs.NAMES:
        config = configs.get(name)
        assert config.precision == "float32" and config.keep_best is True
        assert config.steps_per_call == (10 if name in ("m2", "m1m2", "ssdgm_mnist", "cascade_vae") else 1)


def test_unknown_names_variants_and_fields_are_value_errors():
    with pytest.raises(ValueError, match="no config named 'm3'; known: m1, m2"):
        configs.get("m3")
    with pytest.raises(ValueError, match="no variant 'svhn'; known variants: fashion_mnist"):
        configs.get("m2:svhn")
    with pytest.raises(ValueError, match="no variant 'x'; known variants: none"):
        configs.get("ssdgm_svhn:x")
    with pytest.raises(ValueError, match="model.depth: the config has no such field"):
        configs.get("m2", {"model.depth": 3})
    with pytest.raises(ValueError, match="epochs: .*cannot be casted"):
        configs.get("m2", {"epochs": "ten"})
    with pytest.raises(ValueError, match="no config file 'elsewhere/m2.py'"):
        configs.load("elsewhere/m2.py")


def test_package_configs_load_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert configs.load("m2").model.name == "m2"
    assert configs.load("m1m2.py:fashion_mnist").model.name == "m1m2"
    assert configs.load("tfssvae/configs/mlvae.py").model.name == "mlvae"
    (tmp_path / "mine.py").write_text(
        "from tfssvae import configs\n"
        "def get_config(variant=None):\n"
        "    return configs.get('m2', {'epochs': 3 if variant == 'short' else 30})\n")
    assert configs.load("mine.py").epochs == 30 and configs.load("mine.py:short").epochs == 3


@pytest.mark.parametrize("changes, match", [
    ({"precision": "float16"}, r"precision: expected one of \['float32', 'bfloat16'\], received 'float16'"),
    ({"epochs": 0}, "epochs: expected an integer >= 1"),
    ({"learning_rate": -1.0}, "learning_rate: expected a positive number"),
    ({"steps_per_call": 0}, "steps_per_call: expected an integer >= 1"),
    ({"model.hidden_units": ("wide",)}, r"model.hidden_units: expected an integer in each entry"),
    ({"model.name": "m3"}, "model: expected one of"),
])
def test_validate_names_the_bad_field(changes, match):
    config = configs.get("m2", changes)
    with pytest.raises(ValueError, match=match):
        experiment.validate(config)


def test_validate_rejects_fields_that_do_not_belong():
    config = configs.get("m2")
    config.model.num_classes = 10
    with pytest.raises(ValueError, match="model.num_classes: set by the experiment"):
        experiment.validate(config)
    config = configs.get("m2")
    config.model.content_dim = 3
    with pytest.raises(ValueError, match="model.content_dim: not an argument of M2"):
        experiment.validate(config)
    config = configs.get("m2")
    config.m1_epochs = 3  # an M1+M2 option
    with pytest.raises(ValueError, match="m1_epochs: not a field of a m2 run"):
        experiment.validate(config)
    config = configs.get("m2")
    config.keep_best = None  # ConfigDict itself refuses values of another type
    with pytest.raises(ValueError, match="keep_best: expected True or False"):
        experiment.validate(config)


@pytest.mark.parametrize("name", ["m1", "m2", "m1m2", "ssdgm_mnist", "mlvae"])
def test_build_model_passes_the_model_section(name):
    sizes = {"m1m2": {"model.m1_latent_dim": 3, "model.m2_latent_dim": 2}, "mlvae": {"model.content_dim": 3}}
    config = configs.get(name, {"model.hidden_units": (8,), **sizes.get(name, {"model.latent_dim": 3})})
    model = experiment.build_model(config, (8, 8, 1), 10, num_examples=500)
    built = model.get_config()
    for key, value in config.model.items():
        if key != "name" and value is not None:  # None: the class's own choice (M1+M2's m1_hidden_units)
            assert built[key] == value, key
    if "num_labelled" in built:
        assert built["num_labelled"] == config.num_labels and built["num_examples"] == 500


def test_a_bfloat16_run_leaves_the_float32_policy(tmp_path):
    config = configs.get("m2", {"epochs": 1, "num_labels": 20, "validation_size": 50, "model.hidden_units": (8,),
                                "model.latent_dim": 3, "precision": "bfloat16", "export": False, "verbose": 0,
                                "model_dir": str(tmp_path)})
    results = experiment.run(config)
    assert results["precision"] == "bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"
    assert json.loads((tmp_path / "model.json").read_text())["run_config"]["precision"] == "bfloat16"


def train_binary(*args, cwd=ROOT):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "binaries.train", *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=cwd)


def test_command_line_overrides_and_a_flagfile_reach_the_model(tmp_path):
    flagfile = tmp_path / "run.flags"
    flagfile.write_text("--config=tfssvae/configs/m2.py\n--config.num_labels=20\n--config.validation_size=50\n")
    done = train_binary(f"--flagfile={flagfile}", "--config.dataset=digits", "--config.epochs=1",
                        "--config.model.hidden_units=(8, 4)", "--config.model.latent_dim=3",
                        f"--config.model_dir={tmp_path / 'run'}", "--config.export=false", "--config.verbose=0")
    assert done.returncode == 0, done.stderr[-3000:]
    written = json.loads((tmp_path / "run" / "model.json").read_text())
    assert written["model"] == "m2"
    assert written["config"]["hidden_units"] == [8, 4] and written["config"]["latent_dim"] == 3
    assert written["config"]["num_labelled"] == 20
    run_config = written["run_config"]
    assert run_config["num_labels"] == 20 and run_config["epochs"] == 1 and run_config["export"] is False
    assert run_config["model"]["hidden_units"] == [8, 4]
    assert run_config["model_dir"] == str(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["num_labels"] == 20


def test_the_fashion_mnist_labelled_share_follows_num_labels_on_the_command_line(tmp_path):
    # The variant's batch rule on the digits (Fashion-MNIST need not be installed): 30 labels, 3 a batch.
    done = train_binary("--config=tfssvae/configs/m2.py:fashion_mnist", "--config.dataset=digits",
                        "--config.num_labels=30", "--config.epochs=1", "--config.model.hidden_units=(8,)",
                        "--config.model.latent_dim=2", f"--config.model_dir={tmp_path / 'run'}",
                        "--config.export=false", "--config.verbose=0")
    assert done.returncode == 0, done.stderr[-3000:]
    run_config = json.loads((tmp_path / "run" / "model.json").read_text())["run_config"]
    assert (run_config["num_labels"], run_config["labelled_batch_size"], run_config["batch_size"]) == (30, 3, 203)


@pytest.mark.parametrize("args, message", [
    (["--config=tfssvae/configs/m5.py"], "no config file 'tfssvae/configs/m5.py'"),
    (["--config=tfssvae/configs/m2.py:svhn"], "no variant 'svhn'; known variants: fashion_mnist"),
    (["--config=tfssvae/configs/m2.py", "--config.model.depth=3"], "config.model has no field 'depth'"),
    (["--config.num_label=3"], "config has no field 'num_label'"),
    (["--config.num_labels=many"], "--config.num_labels=many: invalid literal for int()"),
    (["--config.precision=float16", "--config.export=false"], "precision: expected one of"),
])
def test_bad_command_lines_exit_2_naming_the_problem(args, message):
    done = train_binary(*args)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "tfssvae-train: error: " in done.stderr and message in done.stderr
    assert "Traceback" not in done.stderr
