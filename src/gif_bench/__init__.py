"""gif-bench: generalized influence functions, their baselines, and a benchmark harness."""

from . import influence

__all__ = ["influence"]
__version__ = "0.1.0"
