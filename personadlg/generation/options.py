"""What `generate` is asked for beyond the model and the files: one typed object, checked once,
shared by checkpoints (`generate.py`) and `method: api` recipes (`api.py`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from personadlg.data.formats import FormatOptions
from personadlg.errors import UsageError


@dataclass(frozen=True)
class GenerateOptions:
    """`generate_file`'s options (see there); UsageError at construction for a bad combination."""

    overrides: Sequence[str] = ()
    turns: str = "all"
    targets: dict[str, str] | None = None
    combinations: bool = False
    limit: int = 0
    overwrite: bool = False
    retry_failed: bool = False
    dry_run: bool = False
    input_format: str = "auto"
    format_options: FormatOptions | None = None
    on_progress: Callable[[int, int], None] | None = None
    method_check: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        if self.turns not in ("all", "last"):
            raise UsageError(f"--turns: expected all or last, got {self.turns!r}")
        if self.limit < 0:
            raise UsageError(
                f"--limit: expected a number of examples >= 0 (0 = all), got {self.limit}"
            )
        if self.combinations and self.targets:
            raise UsageError("give --attributes or --all-combinations, not both")
