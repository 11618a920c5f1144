"""Generalized influence function: Δθ_J = (H_Jᵀ H_J)⁻¹ H_Jᵀ g, zero elsewhere."""

from ..editing import solve_library_method
from .spec import MethodSpec

SPEC = MethodSpec(name="gif", label="GIF", direction=solve_library_method)
