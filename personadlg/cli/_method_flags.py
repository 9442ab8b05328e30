"""Flags a method adds to a generic command, declared with the method in the registry.

A method's entry in `personadlg/registry.py` may carry `cli={COMMAND: {FLAG: spec}}`; generic
commands (`generate`, `plot`, ...) accept those flags without knowing the method, and check them
against the checkpoint's method once it is known. A spec is either
`{"overrides": ["model.x=y", ...], "help": ...}` (the flag stands for those overrides),
`{"value": "IDS", "override": "model.x={}", "help": ...}` (the flag's value fills one override) or
`{"value": "FILE", "action": "module:function", "help": ...}` (the flag takes a value and the
function does the work). Reading them imports nothing heavy.
"""

from __future__ import annotations

from typing import Any

from personadlg.errors import UsageError
from personadlg.registry import METHODS, did_you_mean


def declared(command: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """{flag: (method, spec)} of every method's flags for COMMAND."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for entry in METHODS.entries():
        for flag, spec in (entry.meta.get("cli") or {}).get(command, {}).items():
            out[flag] = (entry.name, spec)
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
            if "value" in spec:
                if "=" in token:
                    flags[name] = token.split("=", 1)[1]
                elif i + 1 < len(items):
                    flags[name] = items[i + 1]
                    i += 1
                else:
                    raise UsageError(f"{name} needs a value ({spec['value']})")
            else:
                flags[name] = True
        else:
            rest.append(token)
        i += 1
    return flags, rest


def check_method(command: str, flags: dict[str, Any], method: str) -> None:
    """Every flag must belong to METHOD (the checkpoint's)."""
    known = declared(command)
    for flag in flags:
        owner = known[flag][0]
        if owner != method:
            raise UsageError(
                f"{flag} applies to {owner} checkpoints; this one is a {method} checkpoint"
            )


def overrides_of(command: str, flags: dict[str, Any]) -> list[str]:
    """The `KEY=VALUE` overrides the FLAGS stand for."""
    known = declared(command)
    out: list[str] = []
    for flag, value in flags.items():
        spec = known[flag][1]
        out += spec.get("overrides", [])
        if "override" in spec:
            out.append(spec["override"].format(value))
    return out


def help_text(command: str) -> str:
    """A help paragraph listing the method flags of COMMAND."""
    known = declared(command)
    if not known:
        return ""
    lines = [
        f"  {flag}{' ' + spec['value'] if 'value' in spec else ''}  ({method}) {spec.get('help', '')}"
        for flag, (method, spec) in known.items()
    ]
    return "\n\n[bold]Method options[/]\n\n" + "\n\n".join(lines)
