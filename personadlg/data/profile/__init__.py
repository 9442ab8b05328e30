"""`personadlg profile infer`: per-user profiles for data without them, through any OpenAI-compatible API."""

from personadlg.data.profile.config import ProfileConfig, is_profile_recipe, load_profile_recipe
from personadlg.data.profile.infer import dry_run, infer

__all__ = ["ProfileConfig", "dry_run", "infer", "is_profile_recipe", "load_profile_recipe"]
