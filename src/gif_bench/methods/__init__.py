"""The update methods. Each module defines its :class:`~gif_bench.methods.spec.MethodSpec`
(``SPEC``; kfac.py two, ``SPECS``); they are registered in :data:`METHODS` here, in the order of
tables and plots. A method of one's own: ``METHODS.register(MethodSpec(...))`` (README).
"""

from collections.abc import Mapping
from typing import Any

from ..settings import Component
from . import (
    arnoldi,
    finetune,
    freezing,
    gif,
    grad_ascent,
    kfac,
    koh,
    l1_sparse,
    neggrad_plus,
    projecting,
    random_label,
    retrain,
    salun,
    scrub,
    second_order,
    ssd,
)
from .spec import METHODS, MethodSpec, unlearner

for _spec in (
    gif.SPEC,
    freezing.SPEC,
    projecting.SPEC,
    koh.SPEC,
    second_order.SPEC,
    *kfac.SPECS,
    arnoldi.SPEC,
    finetune.SPEC,
    grad_ascent.SPEC,
    random_label.SPEC,
    l1_sparse.SPEC,
    salun.SPEC,
    neggrad_plus.SPEC,
    scrub.SPEC,
    ssd.SPEC,
    retrain.SPEC,
):
    METHODS.register(_spec)

__all__ = ["METHODS", "MethodSpec", "settings", "unlearner"]


def settings(values: Mapping[str, Any]) -> Component:
    """A method's config node (plain, resolved) as its name and typed options."""
    return Component.of(METHODS[str(values["name"])], values)
