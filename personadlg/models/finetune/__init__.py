"""Method `finetune`: the papers' baselines — a causal LM or seq2seq model fine-tuned on context → reply."""

from personadlg.models.base import MethodSpec
from personadlg.models.finetune.config import FinetuneConfig
from personadlg.models.finetune.model import FinetuneModel, build, load

SPEC = MethodSpec(
    name="finetune",
    config_cls=FinetuneConfig,
    build=build,
    load=load,
    model_cls=FinetuneModel,
    description="causal-LM / seq2seq fine-tune on context -> response",
    supports=("persona", "profile", "attributes"),
)

__all__ = ["SPEC", "FinetuneConfig", "FinetuneModel"]
