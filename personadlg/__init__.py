"""personadlg: personalized dialogue generation toolkit.

Importing the package is cheap: no torch, no transformers. Heavy modules are imported lazily by
the commands and registries that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
