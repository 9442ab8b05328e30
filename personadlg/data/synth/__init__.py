"""`personadlg synth`: aspect-level dialogue synthesis through any OpenAI-compatible API."""

from personadlg.data.synth.config import SynthConfig, is_synth_recipe, load_synth_recipe

__all__ = ["SynthConfig", "is_synth_recipe", "load_synth_recipe"]
