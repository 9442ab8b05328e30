"""Method `classifier`: sequence classifiers used by evaluation (attribute classifiers, NLI)."""

from personadlg.models.base import MethodSpec
from personadlg.models.classifier.config import ClassifierConfig
from personadlg.models.classifier.data import read_items
from personadlg.models.classifier.model import ClassifierModel, build, load

SPEC = MethodSpec(
    name="classifier",
    config_cls=ClassifierConfig,
    build=build,
    load=load,
    model_cls=ClassifierModel,
    read=read_items,
    description="sequence classifiers for evaluation: per-attribute aspect classifiers, NLI",
)

__all__ = ["SPEC", "ClassifierConfig", "ClassifierModel"]
