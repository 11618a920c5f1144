"""The solver study (``experiment=solver_study``): regularisation as a measured variable.

One run of the study is an ordinary run of the harness whose config has a ``study`` node (the
experiment's: the variant's name, family and label, the methods it applies to, the reference
solvers). Three things set it apart:

* a job of the study's sweep whose variant does not apply to its method (a CG variant for
  K-FAC, a K-FAC damping for GIF) is skipped without a row (:func:`skipped`);
* its row names the variant (:func:`row_fields`);
* with ``study.references: true`` its row also measures the direction it stepped along
  (:func:`reference_fields`): ``direction_norm`` ‖Δθ‖; ``cos_converged`` and ``cos_series``,
  its cosine with the same method's Δθ on the same problem (trained model, g, mask J, Hessian
  sample) solved by ``study.converged`` (CG to 1e-4) and by ``study.series`` (the paper's
  truncated series, ``solver=authors``); and ``regularisation``, a strength common to every
  solver and method (below). Methods without a least-squares system of their own (K-FAC,
  EK-FAC) are compared with **GIF's** converged solution and series (``study.reference``: GIF
  at the study's MR and selector, the GIF rows' own references, on the same trained model, g
  and Hessian sample). Their Δθ changes every Conv/Linear parameter and GIF's only J, so their
  |cos| is at most ``share_in_reference_j`` = ‖P_J Δθ‖/‖Δθ‖, which every row records (1 for
  GIF and freezing). (GIF over every Conv/Linear parameter would be the like-for-like system,
  but its CG to 1e-4 alone takes longer than the study's budget per seed on the backdoor task.)

The reference directions, and λ_max of each reference system, are cached under
``<paths.cache>/directions/<key>.pt`` (:func:`reference_key`: the trained model's cache key,
the task, the method, the mask, the Hessian sample, g and the reference solver's options),
written atomically; an unreadable file is moved aside and rebuilt. The run whose own solver
*is* a reference (the study's ``series`` and ``converged`` variants) stores its own direction
there, or takes it from there if an earlier run already solved it (:func:`stored_solve`; its
row then counts the seconds that solve took, ``direction_stored``), so that each reference is
solved once per problem; the cosine of such a run with itself is 1. The cache is not keyed on
the code: clear ``<paths.cache>/directions`` after a change to the solvers.

Regularisation strength, ``regularisation`` ρ (dimensionless): the eigenvalue of H below which
the direction's filter cuts, as a fraction of H's largest (above 1: even H's top eigenvalue is
damped, a gradient-like step). GIF's and freezing's
solvers work on the normal equations A = KᵀK (K = H P_J or P_J H P_J; A's eigenvalues are H's
squared), and a filter on A that cuts at λ_eff cuts H at √λ_eff, so ρ = √(λ_eff / λ_max(A)),
λ_max(A) from ``study.power_iters`` steps of power iteration (``spectrum_max``), with

* Tikhonov damping λ (``solver.damping``): λ_eff = λ, the filter σ/(σ + λ) on A's eigenvalues;
* CG stopped after k iterations: λ_eff = λ_max(A)/k² (k steps of CG or of a ν-method
  regularise like Tikhonov with λ ∝ k⁻²: Engl, Hanke & Neubauer 1996, ch. 6-7), so ρ = 1/k;
  damped CG adds both;
* the truncated series (Landweber with step c = 1/M², M the final loss divisor, N + 1 terms):
  the filter 1 − (1 − cσ)^{N+1} turns over near σ ≈ 1/(c(N + 1)) (1 − 1/e there, against
  Tikhonov's 1/2 at σ = λ), so λ_eff = M²/(N + 1);
* K-FAC and EK-FAC, (G + μI)⁻¹ g on the Fisher G ≈ H (not squared): the cut-off is μ itself,
  ρ = μ / √λ_max(A) with A GIF's normal equations over the parameters they change (every
  Conv/Linear weight and bias), whose λ_max is H's top eigenvalue there, squared.

``effective_damping`` is λ_eff (μ for K-FAC). These are rules of thumb for where each filter
turns over, not identities; the table also lists each variant's own knob.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import editing, influence, methods, storage, train
from .influence import tree
from .methods import METHODS
from .settings import Run, Selector, Solver

log = logging.getLogger(__name__)

REFERENCE_METHOD = "gif"  # the system of a method without one of its own (K-FAC, EK-FAC)
REFERENCES = ("series", "converged")  # the study's reference solvers (study.<name>)


def spec_of(run: Run) -> Mapping[str, Any] | None:
    """The run's ``study`` node, or ``None`` outside the study."""
    return run.study


def skipped(study: Mapping[str, Any] | None, method: str) -> str | None:
    """Why the job of the study's sweep with this ``study`` node (plain, resolved) and ``method``
    is not a run (its variant applies to other methods), or ``None``."""
    if study is None or study.get("methods") is None or method in study["methods"]:
        return None
    methods = ", ".join(study["methods"])
    return f"study_variant={study.get('variant')} applies to {methods}, not method={method}"


def row_fields(run: Run) -> dict[str, Any]:
    """The variant's name, family and label, and the solver's knobs (empty outside the study)."""
    study = spec_of(run)
    if study is None:
        return {}
    return {
        "study_variant": study.get("variant"),
        "study_family": study.get("family"),
        "study_label": study.get("label"),
        "solver_damping": run.solver.options.get("damping"),
        "solver_max_iter": run.solver.options.get("max_iter"),
        "solver_tol": run.solver.options.get("tol"),
    }


def wants_references(run: Run) -> bool:
    study = spec_of(run)
    return study is not None and bool(study.get("references", False))


def _solver_spec(node: Mapping[str, Any] | Solver) -> dict[str, Any]:
    """A solver (a study's node, or the run's) as the options that reach the solver, with its
    name: without CG's probe options where there is no preconditioner (as
    :func:`gif_bench.config.canonicalize` drops them)."""
    spec = {"name": node.name, **node.options} if isinstance(node, Solver) else dict(node)
    if "preconditioner" in spec and spec["preconditioner"] is None:
        spec.pop("probes", None)
        spec.pop("probe_seed", None)
    return spec


def _own_system(method: str) -> bool:
    """Whether the method's Δθ is a least-squares solution on the run's mask (gif, freezing, projecting)."""
    return method in influence.LINEAR_METHODS and METHODS[method].uses_mask


def reference_problem(run: Run, edit, problem: editing.Problem) -> tuple[str, editing.Problem]:
    """The method and posed problem whose converged solution and series a run is compared with:
    its own, or for a method without a least-squares system of its own (K-FAC, EK-FAC)
    ``study.reference``'s (GIF at the study's MR and selector: the same trained model, g and
    Hessian sample, the GIF rows' J, so that their references serve)."""
    if _own_system(run.method.name):
        return run.method.name, problem
    reference = spec_of(run).get("reference") or {}
    name = str(reference.get("method", REFERENCE_METHOD))
    posed = run.but(
        method=methods.settings({"name": name}),
        mr=float(reference.get("mr", run.mr)),
        selector=Selector(str(reference.get("selector", run.selector.name)), run.selector.samples),
    )
    return name, editing.setup(posed, problem.model, edit, METHODS[name])


def _conv_linear(problem: editing.Problem) -> dict[str, Tensor]:
    """Every Conv/Linear weight and bias (``select("all")``): what K-FAC and EK-FAC change."""
    mask = influence.select("all", problem.model, ratio=1.0)
    return {k: mask[k].to(problem.params[k].device) for k in problem.params}


def reference_key(
    run: Run, edit, problem: editing.Problem, method: str, mask: dict[str, Tensor], what: dict[str, Any]
) -> str:
    """The cache key of a reference: the trained model's, the task, the method, the mask, the
    Hessian sample, g and ``what`` (the reference solver's options, or the spectrum's)."""
    first = next(iter(problem.params.values()))
    spec = {
        "model": train.cache_key(run, edit.train_set),
        "task": run.fingerprint["task"],
        "method": method,
        "mask": storage.tensor_digest(*(mask[k] for k in problem.params)),
        "hessian": storage.tensor_digest(*problem.hessian_batch),
        "grad": storage.tensor_digest(*(problem.grad[k] for k in problem.params)),
        "device": first.device.type,
        "dtype": str(first.dtype),
        **what,
    }
    return storage.digest(spec, length=20)


def _path(run: Run, key: str) -> Path:
    return Path(run.paths.cache) / "directions" / f"{key}.pt"


def _load(path, params: dict[str, Tensor]) -> dict | None:
    """The stored entry, or ``None`` (none there; an unreadable or foreign one is moved aside)."""
    if not path.exists():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
        direction = entry.get("direction")
        if direction is not None:
            if set(direction) != set(params) or any(direction[k].shape != params[k].shape for k in params):
                raise ValueError("its tensors are not this model's")
            entry["direction"] = {k: direction[k].to(params[k].device, params[k].dtype) for k in params}
        elif not isinstance(entry.get("value"), float):
            raise ValueError("it holds neither a direction nor a value")
        return entry
    except Exception as err:  # a truncated or foreign file: whatever torch.load raises
        aside = storage.move_aside(path)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        log.warning("cached reference %s cannot be read (%s); moved to %s, solving it again", path, reason, aside.name)
        return None


def _info(stored: dict[str, Any]) -> influence.SolveInfo:
    """A stored :class:`~gif_bench.influence.SolveInfo` (fields it does not know are left out)."""
    known = {f.name for f in dataclasses.fields(influence.SolveInfo)}
    return influence.SolveInfo(**{k: v for k, v in stored.items() if k in known})


def _store(
    path,
    direction: dict[str, Tensor] | None,
    info: influence.SolveInfo,
    value: float | None = None,
    seconds: float = math.nan,
) -> None:
    entry: dict[str, Any] = {"info": dataclasses.asdict(info), "seconds": float(seconds)}
    if direction is not None:
        entry["direction"] = {k: v.detach().cpu() for k, v in direction.items()}
    if value is not None:
        entry["value"] = float(value)
    storage.save_torch(path, entry)


def _solve(run: Run, problem: editing.Problem, method: str, mask, node: Mapping[str, Any]):
    """Δθ of ``method`` on ``problem`` with mask ``mask``, solved by the solver ``node``, with the
    options a run of that solver would pass (:func:`gif_bench.editing.solver_options`)."""
    options = editing.solver_options(run.but(solver=Solver.of(_solver_spec(node))))
    return influence.solve_linear(
        method,
        problem.hessian_loss,
        problem.params,
        problem.grad,
        mask=mask,
        solver=str(node["name"]),
        model=problem.folded,
        **options,
    )


def _power(iters: int, seed: int):
    """A :class:`~gif_bench.influence.Solver` that returns no direction and, as ``info.scale``,
    λ_max of the method's normal equations KᵀK by ``iters`` steps of power iteration from a
    seeded random start on the mask."""

    def run(method, system, **_):
        op, op_t, _ = method.system(system.products, system.grad)
        gen = torch.Generator().manual_seed(seed)
        v = {k: torch.randn(t.shape, generator=gen, dtype=t.dtype).to(t.device) for k, t in system.grad.items()}
        v = tree.project(v, system.mask)
        v = tree.scale(v, 1.0 / max(tree.norm(v), 1e-30))
        lam = 0.0
        for _ in range(iters):
            av = op_t(op(v))
            lam = tree.norm(av)
            if lam == 0.0 or not math.isfinite(lam):
                break
            v = tree.scale(av, 1.0 / lam)
        info = influence.SolveInfo(solver="power", iterations=iters, hvps=2 * iters, scale=lam, converged=True)
        return tree.zeros_like(system.grad), info

    return influence.Solver("power", run)


def cosine(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    """cos ∠(a, b) of two parameter dicts, in float64 (NaN if either is zero)."""
    x = torch.cat([a[k].detach().reshape(-1).double().cpu() for k in a])
    y = torch.cat([b[k].detach().reshape(-1).double().cpu() for k in a])
    nx, ny = float(torch.linalg.vector_norm(x)), float(torch.linalg.vector_norm(y))
    if nx == 0.0 or ny == 0.0 or not (math.isfinite(nx) and math.isfinite(ny)):
        return math.nan
    return float(x @ y) / (nx * ny)


def regularisation(run: Run, info: influence.SolveInfo, lam_max: float) -> tuple[float, float]:
    """``(ρ, λ_eff)`` of the run's solve (module docstring); NaN where λ_max is not positive."""
    if not (lam_max > 0 and math.isfinite(lam_max)):
        return math.nan, math.nan
    if not _own_system(run.method.name):  # K-FAC, EK-FAC: (G + μI)⁻¹, μ in info.scale
        mu = float(info.scale)
        return mu / math.sqrt(lam_max), mu
    name = run.solver.name
    damping = float(run.solver.options.get("damping") or 0.0)
    if name in influence.SOLVERS and getattr(influence.SOLVERS[name], "lissa", name == "lissa"):
        terms = int(info.iterations) + 1  # N products: N + 1 terms of the series
        lam_eff = float(info.scale) ** 2 / terms + damping
    elif name == "exact":
        lam_eff = damping
    else:  # a Krylov solver stopped after k iterations
        lam_eff = damping + lam_max / max(int(info.iterations), 1) ** 2
    return math.sqrt(lam_eff / lam_max), lam_eff


def stored_solve(run: Run, edit):
    """For a run whose own solve is one of the study's references (its ``series`` and
    ``converged`` variants): a function of the posed problem that returns that reference from
    the cache as ``(Δθ, info, the seconds its solve took)``, or ``None`` where it is not there
    (:func:`gif_bench.editing.influence_direction`'s ``stored``), so that the study solves it
    once, whichever run needs it first. ``None`` for every other run."""
    if not wants_references(run) or not _own_system(run.method.name):
        return None
    own = _solver_spec(run.solver)
    if not any(_solver_spec(spec_of(run)[name]) == own for name in REFERENCES):
        return None

    def stored(problem: editing.Problem):
        path = _path(run, reference_key(run, edit, problem, run.method.name, problem.mask, {"solver": own}))
        entry = _load(path, problem.params)
        if entry is None:
            return None
        log.info("study: this run's direction is a stored reference: %s", path.name)
        seconds = float(entry.get("seconds", math.nan))
        return entry["direction"], _info(entry["info"]), seconds if math.isfinite(seconds) else 0.0

    return stored


def _spectrum(run: Run, edit, problem: editing.Problem, method: str, mask) -> tuple[float, bool]:
    """(λ_max of ``method``'s normal equations on ``mask``, whether it came from the cache)."""
    iters = int(spec_of(run).get("power_iters", 20))
    path = _path(run, reference_key(run, edit, problem, method, mask, {"spectrum": iters, "seed": run.seed}))
    if (entry := _load(path, problem.params)) is not None:
        return float(entry["value"]), True
    _, info = influence.solve_linear(
        method,
        problem.hessian_loss,
        problem.params,
        problem.grad,
        mask=mask,
        solver=_power(iters, run.seed),
        model=problem.folded,
        hvp=run.hessian.product,
    )
    _store(path, None, info, value=float(info.scale))
    return float(info.scale), False


def reference_fields(run: Run, edit, direction: editing.Direction) -> dict[str, Any]:
    """The study's measurements of ``direction`` (module docstring), computing or loading the
    references it is compared with; call before the update loop moves the parameters."""
    study = spec_of(run)
    own = _own_system(run.method.name)
    method, problem = reference_problem(run, edit, direction.problem)
    mask = problem.mask
    own_spec = _solver_spec(run.solver)
    in_j = tree.norm(tree.project(direction.delta, mask))
    norm = tree.norm(direction.delta)
    row: dict[str, Any] = {
        "direction_norm": norm,
        "direction_stored": direction.stored,
        "reference_method": method,
        "reference_selected": tree.count(mask),
        "share_in_reference_j": in_j / norm if norm > 0 else math.nan,  # ‖P_J Δθ‖ / ‖Δθ‖
    }
    cached = True
    for name in REFERENCES:
        node = study[name]
        spec = _solver_spec(node)
        path = _path(run, reference_key(run, edit, problem, method, mask, {"solver": spec}))
        if own and spec == own_spec:  # this run is the reference: its own direction, stored for the others
            delta, info = direction.delta, direction.info
            if not path.exists():
                _store(path, delta, info, seconds=direction.solve_seconds)
        elif (entry := _load(path, problem.params)) is not None:
            delta, info = entry["direction"], _info(entry["info"])
        else:
            cached = False
            log.info("study: solving the %s reference (%s by %s)", name, method, spec.get("name"))
            solving = time.perf_counter()
            delta, info = _solve(run, problem, method, mask, node)
            _store(path, delta, info, seconds=time.perf_counter() - solving)
        row[f"cos_{name}"] = cosine(direction.delta, delta)
        row[f"{name}_iterations"] = info.iterations
        row[f"{name}_residual"] = info.residual
        row[f"{name}_converged"] = info.converged
        if name == "series":  # its final loss divisor M and restarts
            row.update(series_scale=info.scale, series_restarts=info.restarts)
    if own:  # λ_max of the run's own normal equations
        lam_max, found = _spectrum(run, edit, problem, method, mask)
    else:  # K-FAC's cut-off against H's top eigenvalue over the parameters it changes
        lam_max, found = _spectrum(run, edit, direction.problem, REFERENCE_METHOD, _conv_linear(direction.problem))
    rho, lam_eff = regularisation(run, direction.info, lam_max)
    row.update(spectrum_max=lam_max, effective_damping=lam_eff, regularisation=rho, references_cached=cached and found)
    return row
