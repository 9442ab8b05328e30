"""Method `cvae`: MIRACLE — a CVAE whose latent space is aligned with personal attributes; at
generation an energy over the latent heads composes any combination of target aspects and an ODE
moves the context's latent towards it (arXiv 2310.18342)."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from personadlg.models.cvae.config import CVAEConfig, ODEConfig
from personadlg.models.cvae.demo import DEMO
from personadlg.models.spec import Flag, Implementation, MethodSpec


def _implementation() -> Implementation:
    from personadlg.models.cvae.model import CVAEModel, build, load

    return Implementation(build=build, load=load, model_cls=CVAEModel)


def plot_latent(model: Any, examples: Sequence[Any], out: Path) -> Path:
    """`personadlg plot RUN --latent DATA`: the latent space of DATA's examples."""
    from personadlg.models.cvae.latent_plot import plot_examples

    return plot_examples(model, examples, out)


SPEC = MethodSpec(
    name="cvae",
    description="MIRACLE: CVAE with latent multi-attribute control, EBM composition and ODE "
    "sampling (arXiv 2310.18342)",
    config_cls=CVAEConfig,
    implementation=_implementation,
    supports=("attributes",),
    flags={
        "generate": {
            "--no-guidance": Flag(
                overrides=("model.ode.guidance_scale=0",),
                help="decode the start latent as is (the unguided baseline); targets are still recorded",
            )
        },
        "plot": {
            "--latent": Flag(
                value="FILE",
                action=plot_latent,
                output="latent_space.png",
                help="draw the latent space (PCA of prior and posterior means) of this data file",
            )
        },
    },
    demo=DEMO,
)

__all__ = ["SPEC", "CVAEConfig", "ODEConfig"]
