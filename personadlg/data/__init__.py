"""Data records, readers/writers, formats, cleaning and splitting (no torch here)."""

from personadlg.data.schema import Dialogue, Example, Message, expand_dialogue

__all__ = ["Dialogue", "Example", "Message", "expand_dialogue"]
