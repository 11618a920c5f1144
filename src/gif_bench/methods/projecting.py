"""Projecting: the full influence H⁻¹ g, kept on the selected parameters."""

from ..editing import solve_library_method
from ..registry import METHODS, MethodSpec

METHODS.register(MethodSpec(name="projecting", label="Projecting", direction=solve_library_method))
