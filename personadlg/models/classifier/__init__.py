"""Method `classifier`: sequence classifiers used by evaluation (attribute classifiers, NLI)."""

from personadlg.models.classifier.config import ClassifierConfig
from personadlg.models.spec import Implementation, MethodSpec


def _implementation() -> Implementation:
    from personadlg.models.classifier.data import read_items
    from personadlg.models.classifier.model import ClassifierModel, build, load

    return Implementation(build=build, load=load, model_cls=ClassifierModel, read=read_items)


SPEC = MethodSpec(
    name="classifier",
    description="sequence classifiers for evaluation: per-attribute aspect classifiers, NLI",
    config_cls=ClassifierConfig,
    implementation=_implementation,
)

__all__ = ["SPEC", "ClassifierConfig"]
