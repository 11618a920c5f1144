"""Koh & Liang (2017): Δθ = H⁻¹ g over every parameter; with ``solver=lissa``, their classic
LiSSA with the method's own ``lissa:`` options (damping, scale, depth)."""

from ..editing import solve_library_method
from ..registry import METHODS, MethodSpec

METHODS.register(MethodSpec(name="koh", label="Koh & Liang IF", direction=solve_library_method, uses_mask=False))
