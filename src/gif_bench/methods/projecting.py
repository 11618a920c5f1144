"""Projecting: the full influence H⁻¹ g, kept on the selected parameters."""

from ..editing import solve_library_method
from .spec import MethodSpec

SPEC = MethodSpec(name="projecting", label="Projecting", direction=solve_library_method)
