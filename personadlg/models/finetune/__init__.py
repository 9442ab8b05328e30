"""Method `finetune`: the papers' baselines — a causal LM or seq2seq model fine-tuned on context → reply."""

from personadlg.models.finetune.config import FinetuneConfig
from personadlg.models.spec import Implementation, MethodSpec


def _implementation() -> Implementation:
    from personadlg.models.finetune.model import FinetuneModel, build, load

    return Implementation(build=build, load=load, model_cls=FinetuneModel)


SPEC = MethodSpec(
    name="finetune",
    description="causal-LM / seq2seq fine-tune on context -> response; optional persona or profile "
    "in the prompt (the papers' baselines)",
    config_cls=FinetuneConfig,
    implementation=_implementation,
    supports=("persona", "profile", "attributes"),
)

__all__ = ["SPEC", "FinetuneConfig"]
