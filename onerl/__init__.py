"""onerl: 1-shot RLVR trainer."""

__version__ = "0.1.0"
