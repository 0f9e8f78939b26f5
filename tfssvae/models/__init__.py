"""Model families; each a ``keras.Model`` subclass with ``train_step``/``test_step``."""
from tfssvae.models.base import GenerativeModel
from tfssvae.models.cascade_vae import CascadeVAE
from tfssvae.models.faces import FacesModel
from tfssvae.models.m1 import M1, M1M2
from tfssvae.models.m2 import M2
from tfssvae.models.mlvae import MLVAE
from tfssvae.models.multi_digit import MultiDigitModel
from tfssvae.models.ssdgm import SSDGM, SSDGMMnist, SSDGMSvhn

MODELS = {"m1": M1, "m2": M2, "m1m2": M1M2, "ssdgm_mnist": SSDGMMnist, "ssdgm_svhn": SSDGMSvhn,
          "mlvae": MLVAE, "cascade_vae": CascadeVAE, "faces": FacesModel,
          "multi_digit": MultiDigitModel}


def model_class(name):
    """The model class registered under ``name`` (a key of ``MODELS``)."""
    if name not in MODELS:
        raise ValueError(f"model: expected one of {sorted(MODELS)}, received {name!r}")
    return MODELS[name]


__all__ = ["CascadeVAE", "FacesModel", "GenerativeModel", "M1", "M1M2", "M2", "MLVAE", "MODELS", "MultiDigitModel", "SSDGM", "SSDGMMnist", "SSDGMSvhn", "model_class"]
