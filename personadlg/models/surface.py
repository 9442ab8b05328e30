"""What a method adds to the command line, declared in its spec: options on generic commands
(`Flag`), what `ls` lists for it (`Listing`), its own commands (`Command`) and `/commands` in
`personadlg chat` (`ChatCommand`), and the tables and text it asks the CLI to print (`Block`).
Light: no torch."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Union

if TYPE_CHECKING:
    from personadlg.data.schema import Example


@dataclass(frozen=True)
class Flag:
    """An option a method adds to a generic command (`train --users`, `generate --codes`).

    A switch stands for OVERRIDES; a flag with a VALUE (its metavar) fills OVERRIDE's `{}` — with
    LISTED the value is split at commas, and with QUOTED each item is written as a JSON string, so
    ids such as `007` stay strings — or, with ACTION, is handed to `action(model, examples, out)`
    (the command loads the checkpoint and the data; OUTPUT is the default file name)."""

    help: str
    value: str = ""
    overrides: tuple[str, ...] = ()
    override: str = ""
    listed: bool = False
    quoted: bool = False
    action: Callable[[Any, Sequence[Any], Path], Path] | None = None
    output: str = ""


@dataclass(frozen=True)
class Listing:
    """What `personadlg ls NAME DIR` shows for a method (lora: `ls adapters RUN`)."""

    help: str
    argument: str
    """What DIR is, in words, for the help and the error when it is missing."""
    read: Callable[[Path], Table]


@dataclass(frozen=True)
class Table:
    """Rows for the CLI to draw (or DATA, as is, for `--json`)."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    data: Any = None


Block = Union["Table", str]
"""What a method asks the CLI to print: a table, or a line of plain text."""


@dataclass(frozen=True)
class Option:
    """An option of a method's command: its flags, value type (Path, int, str, bool), help."""

    flags: tuple[str, ...]
    type: type
    help: str
    default: Any = None
    required: bool = False


class CommandKit(Protocol):
    """What the CLI lends a method's command (a method folder never imports generation/)."""

    def examples(self, path: Path) -> list[Example]:
        """Every example of a data file (dialogues expanded, examples as they are)."""

    def decoding(self, overrides: Sequence[str]) -> Any:
        """The checkpoint's `generate:` settings with KEY=VALUE OVERRIDES (a GenerateConfig)."""


@dataclass(frozen=True)
class Command:
    """`personadlg METHOD NAME CHECKPOINT [options] [KEY=VALUE ...]`: a command a method adds,
    run on one of its checkpoints (codebook: `inspect`). The CLI loads the checkpoint (under the
    loading policy), calls `run(model, options, kit)` for a JSON-able report, and prints
    `--json` or the blocks `render(report, options)` returns."""

    help: str
    run: Callable[[Any, Mapping[str, Any], CommandKit], dict[str, Any]]
    render: Callable[[dict[str, Any], Mapping[str, Any]], list[Block]]
    options: Mapping[str, Option] = field(default_factory=dict)
    examples: tuple[str, ...] = ()


class ChatView(Protocol):
    """What a chat `/command` of a method sees of the conversation (`generation/chat.py`)."""

    method: str
    supports: tuple[str, ...]
    last_record: dict[str, Any]
    """What the method recorded for the last reply's example (codebook: its codes); {} before."""
    last_info: dict[str, Any]
    """What the method recorded about the last reply's generate call."""


@dataclass(frozen=True)
class ChatCommand:
    """`/NAME ARG` in `personadlg chat` for this method's models: `run(view, arg)` returns the
    text to show (codebook: `/codes`, the persona codes chosen for the last reply)."""

    help: str
    run: Callable[[ChatView, str], str]
    usage: str = ""
    """How `/help` shows it, e.g. `/codes` (default: `/NAME`)."""
