"""Method `cvae`: MIRACLE — a CVAE whose latent space is aligned with personal attributes; at
generation an energy over the latent heads composes any combination of target aspects and an ODE
moves the context's latent towards it (arXiv 2310.18342)."""

from personadlg.models.base import MethodSpec
from personadlg.models.cvae.config import CVAEConfig, ODEConfig
from personadlg.models.cvae.model import CVAEModel, build, load

SPEC = MethodSpec(
    name="cvae",
    config_cls=CVAEConfig,
    build=build,
    load=load,
    model_cls=CVAEModel,
    description="MIRACLE: CVAE + latent attribute heads + EBM/ODE multi-attribute control",
    supports=("attributes",),
)

__all__ = ["SPEC", "CVAEConfig", "CVAEModel", "ODEConfig"]
