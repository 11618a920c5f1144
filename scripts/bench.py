"""Performance suite: writes BENCHMARKS.md from one run on this machine (``make bench``).

Times are medians over repeats, measured in this one process; ratios are to the gradient of
the same batch, so they compare across machines better than the absolute times.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from gif_bench import data as datasets
from gif_bench import influence, models, tasks, train
from gif_bench.influence import tree

ROOT = Path(__file__).resolve().parents[1]


def _median_seconds(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):  # oneDNN picks and caches kernels on the first calls of a shape
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def hvp_table(width: float, batch: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = models.VGG(width=width, in_channels=3, num_classes=10).eval()
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    names = list(params)

    def loss(p):
        return F.cross_entropy(torch.func.functional_call(model, (p, buffers), (x,)), y)

    v = {k: torch.randn_like(t) for k, t in params.items()}
    leaves = [params[k].clone().requires_grad_(True) for k in names]

    def gradient():
        return torch.autograd.grad(loss(dict(zip(names, leaves))), leaves)

    def research_hvp(vec):  # double backward, first-order graph rebuilt for every product
        first = torch.autograd.grad(loss(dict(zip(names, leaves))), leaves, create_graph=True)
        return dict(zip(names, torch.autograd.grad(first, leaves, grad_outputs=[vec[k] for k in names])))

    jvp_hvp = influence.hvp_fn(loss, params, mode="forward")
    ours = influence.hvp_fn(loss, params, mode="reverse")
    mask = influence.select("random", model, 0.05, seed=0)

    def gif_iteration(hvp):
        return tree.project(hvp(hvp(tree.project(v, mask))), mask)

    out = {"params": sum(t.numel() for t in params.values())}
    out["grad"] = _median_seconds(gradient, repeats)
    out["jvp_of_grad"] = _median_seconds(lambda: jvp_hvp(v), repeats)
    out["double_backward"] = _median_seconds(lambda: research_hvp(v), repeats)
    out["ours_setup"] = _median_seconds(lambda: influence.hvp_fn(loss, params, mode="reverse"), repeats)
    out["ours"] = _median_seconds(lambda: ours(v), repeats)
    out["gif_iter_ours"] = _median_seconds(lambda: gif_iteration(ours), repeats)
    out["gif_iter_research"] = _median_seconds(lambda: gif_iteration(research_hvp), repeats)
    out["rss_mb"] = _rss_mb()
    return out


def solver_table(tol: float, lissa_cap: int) -> list[tuple[str, int, float, bool, float]]:
    """HVPs each solver needs for GIF's normal equations on the quickstart's trained model."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=quickstart", "logger=none"])
    device = torch.device("cpu")
    data = datasets.load(cfg.dataset, cfg.paths.data, device)
    edit = tasks.build(cfg.task, data)
    torch.manual_seed(int(cfg.seed))
    model = models.build(cfg.model, data.in_channels, data.num_classes, cfg.dataset.image_size)
    train.train_or_load(cfg, model, data, edit.train_set, device, Path(cfg.paths.root) / "cache")
    from gif_bench.editing import _functional, removal_gradient

    params = {k: v.detach() for k, v in model.named_parameters()}
    gen = torch.Generator().manual_seed(int(cfg.seed))
    ret = edit.retained_index
    idx = ret[torch.randperm(len(ret), generator=gen)[: cfg.hessian.samples]]
    logits = _functional(model)
    xh, yh = edit.train_set.x[idx], edit.train_set.y[idx]

    def loss(p):
        return F.cross_entropy(logits(p, xh), yh)

    grad = removal_gradient(model, edit, params)
    mask = influence.select("highest_k_gradients", model, 0.05, batch=(edit.removed.x, edit.removed.y))
    rows = []
    for name, options in (
        ("lissa", dict(scale="auto", tol=tol, max_iter=lissa_cap)),
        ("cg", dict(tol=tol, max_iter=2000)),
        ("lsqr", dict(tol=tol, max_iter=2000)),
    ):
        start = time.perf_counter()
        _, info = influence.solve("gif", loss, params, grad, mask=mask, solver=name, return_info=True, **options)
        rows.append((name, info.hvps, info.residual, info.converged, time.perf_counter() - start))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--widths", type=float, nargs="+", default=[0.25, 1.0])
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--lissa-cap", type=int, default=500, help="LiSSA iterations at most")
    args = parser.parse_args()

    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (scripts/bench.py) on {date.today().isoformat()}: "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}, CPU"
        + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")
        + ". Medians of "
        f"{args.repeats} repeats after an untimed pass and 3 warm-up calls of each measurement; every ratio is "
        "to one gradient of the same batch. Repeated runs on this 2-core machine move single figures by "
        "up to ~15 %.",
        "",
        f"## Hessian-vector products, VGG-11, batch {args.batch}, fp32, eval mode",
        "",
        "| width | params | gradient (s) | jvp-of-grad (s, ×grad) | double backward, rebuilt (s, ×grad) "
        "| ours (s, ×grad) | ours: graph setup once per solve (s) | GIF iteration, ours (s, ×grad) "
        "| GIF iteration, research code (s, ×grad) | ours vs research | peak RSS so far (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    hvp_table(args.widths[0], args.batch, 1)  # untimed pass: the process's first calls run slow
    for width in args.widths:
        r = hvp_table(width, args.batch, args.repeats)
        g = r["grad"]

        def cell(key, g=g, r=r):
            return f"{r[key]:.3f} ({r[key] / g:.2f}×)"

        lines.append(
            f"| {width} | {r['params']:,} | {g:.3f} | {cell('jvp_of_grad')} | {cell('double_backward')} | "
            f"{cell('ours')} | {r['ours_setup']:.3f} | {cell('gif_iter_ours')} | {cell('gif_iter_research')} | "
            f"{r['gif_iter_research'] / r['gif_iter_ours']:.2f}× faster | {r['rss_mb']:.0f} |"
        )
        print(lines[-1], flush=True)
    lines += [
        "",
        '"Ours" builds the first-order graph of ∇loss once per solve and backpropagates every product '
        "through it (reverse-over-reverse); the research code rebuilds that graph for every product.",
        "",
        f"## Solvers on the quickstart's GIF system (relative residual {args.tol:g})",
        "",
        "Digits, VGG-11 ×0.25, class 8 removed, highest-k gradients at 5 %, 128 Hessian samples; the "
        "normal equations H_JᵀH_J x = H_Jᵀ g. LiSSA starts from the power-iteration scale "
        f"(its 40 HVPs are counted) and is capped at {args.lissa_cap} iterations.",
        "",
        "| solver | HVPs | final relative residual | reached | seconds |",
        "|---|---|---|---|---|",
    ]
    solver_rows = solver_table(args.tol, args.lissa_cap)
    for name, hvps, res, ok, secs in solver_rows:
        lines.append(f"| {name} | {hvps} | {res:.2e} | {'yes' if ok else 'no'} | {secs:.1f} |")
        print(lines[-1], flush=True)
    by = {name: (hvps, ok) for name, hvps, _, ok, _ in solver_rows}
    if by["lsqr"][1]:
        ratio = by["lissa"][0] / by["lsqr"][0]
        verdict = "at least" if not by["lissa"][1] else "exactly"
        lines += ["", f"LiSSA used {verdict} {ratio:.1f}× the HVPs of LSQR on this problem."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
