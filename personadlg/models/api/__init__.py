"""Method `api`: no training; any OpenAI-compatible chat model prompted with the example's persona,
profile and attribute targets (the papers' LLM baselines). `personadlg generate api/persona
--input FILE --out GEN.jsonl` sends one request per (example, target) through the engine
(`personadlg.llm`)."""

from __future__ import annotations

from personadlg.models.api.config import ApiConfig, find_api_recipe, is_api_recipe, load_api_recipe
from personadlg.models.spec import MethodSpec

SPEC = MethodSpec(
    name="api",
    description="no training: any OpenAI-compatible chat model prompted with persona / profile / "
    "attributes (the papers' LLM baselines); `generate api/persona ...`",
    supports=("persona", "profile", "attributes"),
)

__all__ = ["SPEC", "ApiConfig", "find_api_recipe", "is_api_recipe", "load_api_recipe"]
