"""gif-bench: generalized influence functions, their baselines, and a benchmark harness."""

import warnings

from . import influence

__all__ = ["CONFIG_MODULE", "influence", "quiet_torch_warnings"]
__version__ = "0.1.0"

# The config tree ships inside the package: Hydra finds it as ``pkg://gif_bench.conf``.
CONFIG_MODULE = "gif_bench.conf"


def quiet_torch_warnings() -> None:
    """For our command-line programs: hide the FutureWarning torch's forward-AD decompositions,
    loaded by the first Hessian product, raise by still calling the deprecated
    ``torch.jit.script``. It is about torch's code, and no user of ours can act on it."""
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
