"""The `lora` model: a profile-aware dialogue LM, and at generation the user's own LoRA adapter.

Stage `base` trains the whole LM exactly as `finetune` does, with the profile rendered into every
prompt by `model.profile_template` (default `[key: value]` pairs). Stage `users` (users.py) trains
one peft adapter per user on that frozen LM. A checkpoint of stage `users` is the base's weights
plus the run's `adapters/`; `generate` picks each example's adapter by its `user_id`:

- one batch may mix users: rows go through peft's mixed-adapter forward (`adapter_names`), in
  greedy, sampling and beam search, each row equal to that user generating alone; a batch of one
  user takes the plain forward of that (active) adapter, which is faster;
- adapters load on first use and at most `generate.max_loaded_adapters` stay in memory (least
  recently used unloaded first; a batch with more users is split into groups that fit);
- a user without an adapter is answered by the base model, and the record says so
  (`decoding.adapter: null`, `decoding.adapter_fallback`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from personadlg.config import GenerateConfig, RunConfig, to_dict
from personadlg.data.schema import Example
from personadlg.errors import UsageError
from personadlg.models.backbone import load_pretrained, load_tokenizer
from personadlg.models.base import BuildContext, Generations, PromptReading
from personadlg.models.finetune.model import FinetuneModel
from personadlg.models.finetune.model import build as build_finetune
from personadlg.models.fingerprint import short, weights_fingerprint
from personadlg.models.lora.adapters import adapters_of, read_index
from personadlg.models.lora.config import GENERATION_FIELDS, LoRAFinetuneConfig

logger = logging.getLogger(__name__)

BASE_ROW = "__base__"  # peft's adapter name for rows that use no adapter


class LoraModel(FinetuneModel):
    """A profile-aware LM (stage base) with per-user adapters (stage users); see the module docstring."""

    name = "lora"
    cfg: LoRAFinetuneConfig

    def __init__(
        self,
        lm: Any,
        tokenizer: Any,
        cfg: LoRAFinetuneConfig,
        *,
        adapters_dir: Path | None = None,
        base_sha256: str = "",
    ) -> None:
        super().__init__(lm, tokenizer, cfg)
        self.base_sha256 = base_sha256
        self.peft: Any = None
        self.loaded: OrderedDict[str, None] = OrderedDict()  # adapter names, least recent first
        self.max_loaded = 32
        self._warned: set[str] = set()
        self.adapters_dir: Path | None = None
        self.users: dict[str, dict[str, Any]] = {}
        if adapters_dir is not None:
            self.use_adapters(adapters_dir)

    # -- adapters ---------------------------------------------------------------------------------

    def use_adapters(self, directory: Path) -> None:
        """Serve the users of DIRECTORY's index (its base must be this model's weights)."""
        index = read_index(directory)
        sha = (index.get("base") or {}).get("sha256", "")
        if sha and self.base_sha256 and sha != self.base_sha256:
            raise UsageError(
                f"{directory}: these adapters were trained on the base {short(sha)}, but this "
                f"checkpoint's weights are {short(self.base_sha256)}; use the checkpoint of the run "
                "that trained them"
            )
        self.unload_all()
        self.adapters_dir = directory
        self.users = dict(index.get("users") or {})

    def unload_all(self) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*was active which is now deleted.*")
            for name in list(self.loaded):
                self.peft.delete_adapter(name)
        self.loaded.clear()

    def configure(self, cfg: LoRAFinetuneConfig) -> None:
        """Generation-time settings (`model.adapters`: another adapters directory of this base)."""
        new, old = to_dict(cfg), to_dict(self.cfg)
        changed = [k for k in new if k not in GENERATION_FIELDS and new[k] != old.get(k)]
        if changed:
            raise UsageError(
                "only model." + ", model.".join(GENERATION_FIELDS) + " can change at generation; "
                f"these are fixed by training: {', '.join(changed)}"
            )
        if cfg.adapters != self.cfg.adapters and cfg.adapters:
            path = Path(cfg.adapters)
            if not (path / "index.json").is_file():
                raise UsageError(
                    f"model.adapters: expected an adapters directory with index.json, got {cfg.adapters}"
                )
            self.use_adapters(path)
        self.cfg = cfg

    def served_fingerprint(self) -> str:
        """sha256 of the adapters' index (it changes whenever an adapter is trained again)."""
        if self.adapters_dir is None or not (self.adapters_dir / "index.json").is_file():
            return ""
        digest = hashlib.sha256((self.adapters_dir / "index.json").read_bytes()).hexdigest()
        return "sha256:" + digest

    def known_user(self, user_id: str) -> dict[str, Any] | None:
        """USER_ID's adapter entry of the index (dir, examples, profile, ...), or None."""
        entry = self.users.get(user_id)
        return dict(entry) if entry else None

    def known_users(self) -> list[str]:
        """The users of the adapters' index, sorted."""
        return sorted(self.users)

    def prompt_reading(self, supports: tuple[str, ...]) -> PromptReading:
        """As finetune's; without adapters the user id selects nothing. A reply shows which
        adapter answered (`adapter`, and `adapter_fallback` when the base did)."""
        reading = super().prompt_reading(supports)
        kept = reading.supports if self.users else tuple(s for s in reading.supports if s != "user")
        return replace(reading, supports=kept, reply_fields=("adapter", "adapter_fallback"))

    def adapter_for(self, user_id: str | None) -> str | None:
        """The adapter name serving USER_ID, or None (the base model answers)."""
        if user_id is None or self.adapters_dir is None:
            return None
        entry = self.users.get(user_id)
        return str(entry["dir"]) if entry else None

    def _ensure_loaded(self, names: set[str]) -> None:
        """Load NAMES (adapter dirs) if needed; unload least recently used others beyond the limit."""
        from peft import PeftModel

        assert self.adapters_dir is not None
        for name in sorted(names):
            if name in self.loaded:
                self.loaded.move_to_end(name)
                continue
            path = self.adapters_dir / name
            if not (path / "adapter_config.json").is_file():
                raise UsageError(
                    f"{path}: the adapter listed in {self.adapters_dir / 'index.json'} is missing"
                )
            with warnings.catch_warnings():  # peft asks transformers a deprecated question
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
                if self.peft is None:
                    self.peft = PeftModel.from_pretrained(self.lm, str(path), adapter_name=name)
                else:
                    self.peft.load_adapter(str(path), adapter_name=name)
            self.peft.eval()
            self.loaded[name] = None
            logger.debug("loaded adapter %s", name)
        for name in list(self.loaded):
            if len(self.loaded) <= self.max_loaded:
                break
            if name not in names:
                with warnings.catch_warnings():  # rows name their adapter: none is "active"
                    warnings.filterwarnings("ignore", message=".*was active which is now deleted.*")
                    self.peft.delete_adapter(name)
                del self.loaded[name]
                logger.debug("unloaded adapter %s", name)

    # -- generation -------------------------------------------------------------------------------

    def generate(  # type: ignore[override]
        self,
        examples: Sequence[Example],
        *,
        decoding: GenerateConfig,
        seeds: Sequence[int],
        targets: Sequence[dict[str, str] | None],
    ) -> Generations:
        self.max_loaded = decoding.max_loaded_adapters
        names = [self.adapter_for(ex.user_id) for ex in examples]
        records: list[dict[str, Any]] = []
        for ex, name in zip(examples, names):
            rec: dict[str, Any] = {"adapter": name}
            if name is None and self.adapters_dir is not None:
                why = (
                    "the example has no user_id"
                    if ex.user_id is None
                    else f"no adapter for user {ex.user_id!r}"
                )
                rec["adapter_fallback"] = f"{why}; the base model answered"
                if ex.user_id is not None and ex.user_id not in self._warned:
                    self._warned.add(ex.user_id)
                    logger.warning("no adapter for user %r: the base model answers", ex.user_id)
            records.append(rec)
        if self.adapters_dir is None or not any(names):
            # loaded adapters sit in the LM's layers: switch them off
            off = self.peft.disable_adapter() if self.peft is not None else contextlib.nullcontext()
            with off:
                base = self.generate_with(
                    self.lm, examples, decoding=decoding, seeds=seeds, targets=targets
                )
            return Generations(base, records=records if self.adapters_dir else None)
        texts = [""] * len(examples)
        for group in _groups(names, self.max_loaded):
            wanted = {n for n in (names[i] for i in group) if n}
            self._ensure_loaded(wanted)
            rows = [names[i] for i in group]
            routing: dict[str, Any] = {"adapter_names": [n or BASE_ROW for n in rows]}
            if len(wanted) == 1 and all(rows):  # one user: the plain forward of the active adapter
                self.peft.set_adapter(rows[0], inference_mode=True)
                routing = {}
            out = self.generate_with(
                self.peft,
                [examples[i] for i in group],
                decoding=decoding,
                seeds=[seeds[i] for i in group],
                targets=[targets[i] for i in group],
                **routing,
            )
            for i, text in zip(group, out):
                texts[i] = text
        return Generations(texts, records=records)


def _groups(names: Sequence[str | None], limit: int) -> list[list[int]]:
    """Row indices split, in order, into groups that use at most LIMIT distinct adapters."""
    groups: list[list[int]] = [[]]
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name and name not in seen and len(seen) >= limit:
            groups.append([])
            seen = set()
        if name:
            seen.add(name)
        groups[-1].append(i)
    return [g for g in groups if g]


def build(cfg: RunConfig, ctx: BuildContext) -> LoraModel:
    """Stage base: a fresh model, as `finetune` builds it."""
    if cfg.model.stage != "base":
        raise UsageError(
            "a lora run of stage users starts from a trained base: set model.init_from (the stage "
            "driver does this when model.stages is [base, users])"
        )
    ft = build_finetune(cfg, ctx)
    return LoraModel(ft.lm, ft.tokenizer, cfg.model)


def load(directory: Path, cfg: RunConfig) -> LoraModel:
    """A saved lora (or finetune) checkpoint; a stage-users checkpoint comes with its run's adapters."""
    mcfg: LoRAFinetuneConfig = cfg.model
    tok = load_tokenizer(directory)
    lm = load_pretrained(directory, arch=mcfg.arch, dtype="auto")
    if lm.config.pad_token_id is None:
        lm.config.pad_token_id = tok.pad_token_id
    adapters: Path | None = None
    if mcfg.adapters:
        adapters = Path(mcfg.adapters)
    elif mcfg.stage == "users" and (adapters_of(directory) / "index.json").is_file():
        adapters = adapters_of(directory)
    sha = weights_fingerprint(directory) if adapters is not None else ""
    return LoraModel(lm, tok, mcfg, adapters_dir=adapters, base_sha256=sha)
