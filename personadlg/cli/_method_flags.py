"""Options a method adds to a generic command, declared in the method's spec (`MethodSpec.flags`).

Generic commands (`train`, `generate`, `plot`) accept those flags without knowing the method, and
check them against the recipe's or checkpoint's method once it is known. A flag stands for
overrides (`Flag.overrides`), fills one override with its value (`Flag.override`), or hands its
value to the method's function (`Flag.action`). Reading them imports no torch.
"""

from __future__ import annotations

import json
from typing import Any

from personadlg.errors import UsageError
from personadlg.models.spec import Flag
from personadlg.registry import METHODS, did_you_mean


def declared(command: str) -> dict[str, tuple[str, Flag]]:
    """{flag: (method, Flag)} of every method's flags for COMMAND."""
    out: dict[str, tuple[str, Flag]] = {}
    for name in METHODS.names():
        for flag, spec in METHODS.get(name).flags.get(command, {}).items():
            out[flag] = (name, spec)
    return out


def split_flags(command: str, args: list[str] | None) -> tuple[dict[str, Any], list[str]]:
    """({flag: value or True}, the other arguments) of ARGS; an unknown `--flag` is an error."""
    known = declared(command)
    flags: dict[str, Any] = {}
    rest: list[str] = []
    items = list(args or [])
    i = 0
    while i < len(items):
        token = items[i]
        name = token.split("=", 1)[0]
        if token.startswith("--"):
            if name not in known:
                raise UsageError(
                    f"no such option: {name}{did_you_mean(name, list(known))} (see `personadlg {command} --help`)"
                )
            spec = known[name][1]
            if spec.value:
                if "=" in token:
                    flags[name] = token.split("=", 1)[1]
                elif i + 1 < len(items):
                    flags[name] = items[i + 1]
                    i += 1
                else:
                    raise UsageError(f"{name} needs a value ({spec.value})")
            else:
                flags[name] = True
        else:
            rest.append(token)
        i += 1
    return flags, rest


def check_method(
    command: str, flags: dict[str, Any], method: str, *, of: str = "checkpoint"
) -> None:
    """Every flag must belong to METHOD (the recipe's or checkpoint's: OF)."""
    known = declared(command)
    for flag in flags:
        owner = known[flag][0]
        if owner != method:
            raise UsageError(f"{flag} applies to {owner} {of}s; this one is a {method} {of}")


def _value(flag: str, spec: Flag, raw: str) -> str:
    """RAW as it goes into SPEC's override: split at commas (listed), each item quoted (quoted)."""
    items = [v.strip() for v in raw.split(",")] if spec.listed else [raw]
    items = [v for v in items if v] if spec.listed else items
    if not items:
        raise UsageError(f"{flag}: expected {spec.value} separated by commas, got {raw!r}")
    return ",".join(json.dumps(v) if spec.quoted else v for v in items)


def overrides_of(command: str, flags: dict[str, Any]) -> list[str]:
    """The `KEY=VALUE` overrides the FLAGS stand for."""
    known = declared(command)
    out: list[str] = []
    for flag, value in flags.items():
        spec = known[flag][1]
        out += spec.overrides
        if spec.override:
            out.append(spec.override.format(_value(flag, spec, str(value))))
    return out


def help_text(command: str) -> str:
    """A help paragraph listing the method flags of COMMAND."""
    known = declared(command)
    if not known:
        return ""
    lines = [
        f"  {flag}{' ' + spec.value if spec.value else ''}  ({method}) {spec.help}"
        for flag, (method, spec) in known.items()
    ]
    return "\n\n[bold]Method options[/]\n\n" + "\n\n".join(lines)
