"""The update methods: each module registers one :class:`~gif_bench.registry.MethodSpec`.

The order of registration here is the order of tables and plots.
"""
# isort: skip_file

from . import gif  # noqa: F401
from . import freezing  # noqa: F401
from . import projecting  # noqa: F401
from . import koh  # noqa: F401
from . import second_order  # noqa: F401
from . import kfac  # noqa: F401  (kfac and ekfac)
from . import arnoldi  # noqa: F401
from . import finetune  # noqa: F401
from . import grad_ascent  # noqa: F401
from . import random_label  # noqa: F401
from . import l1_sparse  # noqa: F401
from . import salun  # noqa: F401
from . import retrain  # noqa: F401
