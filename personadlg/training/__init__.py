"""The method-agnostic trainer (accelerate), checkpoints and run logging."""
