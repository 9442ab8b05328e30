"""Method `api`: no training; any OpenAI-compatible chat model prompted with the example's persona,
profile and attribute targets (the papers' LLM baselines). `personadlg generate api/persona
--input FILE --out GEN.jsonl` sends one request per (example, target) through synth's runner."""

from __future__ import annotations

from dataclasses import dataclass

from personadlg.models.api.config import ApiConfig, find_api_recipe, is_api_recipe, load_api_recipe


@dataclass(frozen=True)
class ApiMethod:
    """The registry entry of a method that is a recipe, not a checkpoint: nothing to build or load."""

    name: str
    description: str
    supports: tuple[str, ...]
    trained: bool = False


SPEC = ApiMethod(
    name="api",
    description="an OpenAI-compatible chat model prompted with persona / profile / attributes",
    supports=("persona", "profile", "attributes"),
)

__all__ = ["SPEC", "ApiConfig", "find_api_recipe", "is_api_recipe", "load_api_recipe"]
