"""Checks of single config values, shared by every registry entry's validation.

They read the composed config as plain, resolved containers (``config.validate`` converts
Hydra's config once), so that the entries' validators need nothing of OmegaConf. Each raises
:class:`~gif_bench.errors.ConfigError` naming the key, the value given and what is allowed, e.g.
``mr=1.5: must be a number in (0, 1]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ConfigError

Config = Mapping[str, Any]  # a composed config as plain, resolved containers


def get(cfg: Config, key: str) -> Any:
    """``cfg``'s value at the dotted ``key`` (``None`` where it, or a node above it, is absent)."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def number(
    cfg: Config, key: str, lo: float, hi: float = float("inf"), *, lo_open: bool = False, integer: bool = False
) -> Any:
    """The number at ``key``, checked to lie in [lo, hi] ((lo, hi] with ``lo_open``)."""
    v = get(cfg, key)
    ok = is_number(v) and (not integer or isinstance(v, int))
    if ok:
        ok = (v > lo if lo_open else v >= lo) and v <= hi
    if not ok:
        kind = "an integer" if integer else "a number"
        left = "(" if lo_open else "["
        right = "∞)" if hi == float("inf") else f"{hi:g}]"
        raise ConfigError(f"{key}={v}", f"must be {kind} in {left}{lo:g}, {right}")
    return v


def choice(cfg: Config, key: str, allowed: Iterable[Any]) -> Any:
    """The value at ``key``, checked to be one of ``allowed``."""
    allowed = list(allowed)
    v = get(cfg, key)
    if v not in allowed:
        raise ConfigError(f"{key}={v}", f"must be one of {', '.join(map(str, allowed))}")
    return v
