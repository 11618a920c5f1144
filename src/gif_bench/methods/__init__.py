"""The update methods: each module registers one :class:`~gif_bench.registry.MethodSpec`.

The order of registration here is the order of tables and plots.
"""
# isort: skip_file

from . import gif  # noqa: F401
from . import freezing  # noqa: F401
from . import projecting  # noqa: F401
from . import koh  # noqa: F401
from . import second_order  # noqa: F401
from . import retrain  # noqa: F401
