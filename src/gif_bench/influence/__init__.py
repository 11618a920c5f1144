"""gif_bench.influence: generalized influence functions as plain functional PyTorch.

Functions of parameter dicts via ``torch.func``: no Hydra, no I/O, no global state.

>>> mask = select("highest_k_gradients", model, ratio=0.05, batch=(x_u, y_u))
>>> delta = solve("gif", loss, params, grad, mask=mask, solver="lissa", max_iter=200)
"""

from .basis import KrylovBasis
from .curvature import (
    arnoldi,
    arnoldi_solve,
    fisher_diagonal,
    kfac_operator,
    kfac_parameters,
    kfac_solve,
    top_eigenpairs,
)
from .fold import fold_batchnorm
from .hvp import ggn_fn, gradient, hessian_matrix, hvp_fn
from .methods import LINEAR_METHODS, METHODS, SOLVERS, LinearMethod, Solver, System, second_order, solve, solve_linear
from .selectors import SELECTORS, curvature_scores, layer_budget, select, selectable_layers
from .solvers import (
    SolveInfo,
    SolverDiverged,
    cg,
    jacobi_normal_diagonal,
    lissa,
    lissa_classic,
    lsqr,
    minres,
    top_eigenvalue,
)

__all__ = [
    "KrylovBasis",
    "LINEAR_METHODS",
    "METHODS",
    "LinearMethod",
    "SELECTORS",
    "SOLVERS",
    "SolveInfo",
    "Solver",
    "SolverDiverged",
    "System",
    "arnoldi",
    "arnoldi_solve",
    "cg",
    "curvature_scores",
    "fisher_diagonal",
    "fold_batchnorm",
    "ggn_fn",
    "gradient",
    "hessian_matrix",
    "hvp_fn",
    "kfac_operator",
    "kfac_parameters",
    "kfac_solve",
    "layer_budget",
    "lissa",
    "lissa_classic",
    "lsqr",
    "minres",
    "jacobi_normal_diagonal",
    "second_order",
    "select",
    "selectable_layers",
    "solve",
    "solve_linear",
    "top_eigenpairs",
    "top_eigenvalue",
]
