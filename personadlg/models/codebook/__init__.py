"""Method `codebook`: MORPHEUS — persona information compressed into a codebook of N vectors; at
generation a predictor chooses M codes from the dialogue history alone, and their vectors condition
the decoder as a key/value prefix, so no persona text is needed (arXiv 2407.02345)."""

from personadlg.models.base import MethodSpec
from personadlg.models.codebook.config import CodebookConfig
from personadlg.models.codebook.model import CodebookModel, build, load

SPEC = MethodSpec(
    name="codebook",
    config_cls=CodebookConfig,
    build=build,
    load=load,
    model_cls=CodebookModel,
    description="MORPHEUS: persona codebook, EM init, VQ + contrastive + code prediction",
    supports=("history",),
    stages=("role", "init", "joint"),
)

__all__ = ["SPEC", "CodebookConfig", "CodebookModel"]
