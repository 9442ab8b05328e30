"""Every registered method against the interface declared in personadlg/models/base.py."""

from __future__ import annotations

import inspect
import typing

import pytest

from personadlg.errors import UsageError
from personadlg.models.base import OPTIONAL_HOOKS, REQUIRED_MEMBERS, PersonaModel, hook
from personadlg.registry import METHODS


def _members(cls: type) -> set[str]:
    names = set(dir(cls))
    for klass in cls.__mro__:
        names |= set(getattr(klass, "__annotations__", {}))
    return names


def _params(fn: object) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p != "self"]  # type: ignore[arg-type]


@pytest.mark.parametrize("name", METHODS.names())
def test_every_registered_method_matches_the_declared_interface(name):
    entry = METHODS.entry(name)
    if not entry.available:
        pytest.skip(f"method {name} is registered but not implemented yet")
    spec = METHODS.get(name)
    assert spec.name == name and spec.description
    if not spec.trained:  # a recipe method (api): no model object to check
        assert spec.supports and spec.config_cls is None
        with pytest.raises(UsageError, match="trains nothing"):
            spec.impl()
        return
    cls = spec.model_cls
    assert cls is not None, f"{name}: SPEC.model_cls is not set"
    members = _members(cls)
    missing = [m for m in REQUIRED_MEMBERS if m not in members]
    assert not missing, f"{name}: {cls.__name__} lacks {missing}"
    for m in ("encode", "collate", "count_tokens", "generate", "explain", "save"):
        assert _params(getattr(cls, m)) == _params(getattr(PersonaModel, m)), (name, m)
    for m, proto in OPTIONAL_HOOKS.items():
        impl = inspect.getattr_static(cls, m, None)
        declared = inspect.getattr_static(proto, m, None)
        if impl is None or not callable(impl) or not callable(declared):
            continue  # absent, or a data member (perplexity, timings)
        assert _params(impl) == _params(declared), (
            f"{name}.{m}{_params(impl)} != {_params(declared)}"
        )
    hints = typing.get_type_hints(spec.build)
    assert "return" in hints


def test_an_undeclared_hook_cannot_be_looked_up():
    class Model:
        on_step = staticmethod(lambda step: None)

        def secret(self) -> None: ...

    assert hook(Model(), "on_step") is not None and hook(Model(), "configure") is None
    with pytest.raises(KeyError, match="not an optional hook declared"):
        hook(Model(), "secret")
