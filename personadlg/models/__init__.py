"""Methods: one package per method with the same file names (config.py, model.py, ...).

Each `models/<name>/config.py` is light (dataclasses only) so recipes validate without torch.
"""
