"""Freezing: the unselected parameters held constant, Δθ_J = H_JJ⁻¹ g_J."""

from ..editing import solve_library_method
from .spec import MethodSpec

SPEC = MethodSpec(name="freezing", label="Freezing", direction=solve_library_method)
