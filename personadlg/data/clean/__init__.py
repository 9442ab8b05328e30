"""`personadlg clean`: validation, normalization, filters and dedup, where no record is lost."""

from personadlg.data.clean.config import CleanConfig
from personadlg.data.clean.pipeline import CleanReport, clean

__all__ = ["CleanConfig", "CleanReport", "clean"]
