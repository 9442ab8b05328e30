"""`lastturn`, a toy method in one folder: a tiny causal LM that reads only the newest turn of the
context. It lives outside personadlg and is registered with one line,

    METHODS.register("lastturn", "lastturn:SPEC")

after which `personadlg train`, `generate`, `chat` and `serve` work with it
(tests/test_toy_method.py copies this folder into a temporary package `lastturn` and does just
that; README: Adding a method). This file is the method's one declaration: light to import, the
torch half behind `implementation`."""

from personadlg.models.spec import Implementation, MethodSpec

from .config import LastTurnConfig


def _implementation() -> Implementation:
    from .model import LastTurnModel, build, load

    return Implementation(build=build, load=load, model_cls=LastTurnModel)


SPEC = MethodSpec(
    name="lastturn",
    description="toy: a tiny causal LM that answers the newest turn only",
    config_cls=LastTurnConfig,
    implementation=_implementation,
    supports=(),
)
