"""Experiment configs: one ``ml_collections.ConfigDict`` file per model family.

Each file has ``get_config(variant=None)``; the training binary loads one with
``--config=tfssvae/configs/m2.py`` (absl passes the text after ':' as the variant:
``--config=tfssvae/configs/m2.py:fashion_mnist``) and overrides fields with
``--config.num_labels=600 --config.model.latent_dim=20``.  From Python::

    from tfssvae import configs
    config = configs.get("m2:fashion_mnist")   # a fresh, unlocked ConfigDict
    config.model.latent_dim = 20
    experiment.run(config)

``base.py`` declares the run fields every config shares.
"""
import importlib
import importlib.util
import os

#: The config files of this package, by name (each also a key of ``tfssvae.models.MODELS``).
NAMES = ("m1", "m2", "m1m2", "ssdgm_mnist", "ssdgm_svhn", "mlvae", "cascade_vae", "faces", "multi_digit")

DIRECTORY = os.path.dirname(os.path.abspath(__file__))


def _split(spec):
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"config: expected a config name or file, e.g. 'm2' or 'tfssvae/configs/m2.py:fashion_mnist', "
                         f"received {spec!r}")
    name, _, variant = spec.partition(":")
    return name, variant or None


def _known():
    return ", ".join(NAMES)


def path(name):
    """The file of the package config ``name`` (``"m2"`` or ``"m2.py"``)."""
    name = name[:-3] if name.endswith(".py") else name
    if name not in NAMES:
        raise ValueError(f"config: no config named {name!r}; known: {_known()}")
    return os.path.join(DIRECTORY, f"{name}.py")


def get(spec, overrides=None):
    """The config ``spec`` of this package: ``"m2"``, ``"m2:fashion_mnist"`` (``.py`` optional).

    ``overrides`` maps dotted field names to values, as on the command line:
    ``{"epochs": 1, "model.hidden_units": (16,)}``.  Returns a fresh, unlocked ConfigDict.
    Raises ValueError for an unknown name, variant or field, or a value of the wrong type.
    """
    name, variant = _split(spec)
    name = os.path.basename(path(name))[:-3]  # checks the name, listing the known ones
    config = importlib.import_module(f"tfssvae.configs.{name}").get_config(variant)
    return override(config, overrides or {})


def override(config, overrides):
    """Sets ``overrides`` (dotted field names to values) in ``config`` and returns it; the
    fields must exist and the values must have their types (ints are taken for floats)."""
    for dotted, value in overrides.items():
        *parents, key = dotted.split(".")
        node = config
        for part in parents + [key]:
            if not (hasattr(node, "keys") and part in node.keys()):
                fields = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "none"
                raise ValueError(f"{dotted}: the config has no such field; fields here: {fields}")
            parent, node = node, node[part]
        try:
            setattr(parent, key, value)
        except TypeError as error:
            raise ValueError(f"{dotted}: {error}") from None
    return config


def _package_name(file_part):
    """``m2`` for ``m2``, ``m2.py`` or ``<anything>/tfssvae/configs/m2.py``; None for other paths."""
    normalised = file_part.replace(os.sep, "/")
    base_name = normalised.rsplit("/", 1)[-1]
    stem = base_name[:-3] if base_name.endswith(".py") else base_name
    if stem in NAMES and (normalised == base_name or normalised.endswith("tfssvae/configs/" + base_name)):
        return stem
    return None


def load(spec):
    """A config from a file path or a package name, with an optional ``:variant``.

    ``spec`` is a path to any config file (``my_configs/m2_big.py:variant``), or, where no
    such file exists, the name of one of this package's configs (``m2``, ``m2.py``, or
    ``tfssvae/configs/m2.py`` from any working directory).  Raises ValueError when the file
    does not exist, has no ``get_config``, or does not know the variant.
    """
    file_part, variant = _split(spec)
    if not os.path.isfile(file_part):
        name = _package_name(file_part)
        if name is None:
            raise ValueError(f"config: no config file {file_part!r} (from {os.getcwd()}); the package's configs are "
                             f"{_known()} (e.g. tfssvae/configs/m2.py)")
        return get(name if variant is None else f"{name}:{variant}")
    module_name = "tfssvae_config_" + "".join(c if c.isalnum() else "_" for c in os.path.abspath(file_part))
    module_spec = importlib.util.spec_from_file_location(module_name, file_part)
    if module_spec is None:
        raise ValueError(f"config: {file_part!r} is not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"config: {file_part} defines no get_config(variant=None)")
    return module.get_config() if variant is None else module.get_config(variant)
