import importlib.resources
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from gif_bench import CONFIG_MODULE

if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per worker: two workers on two cores, no spinning
    os.environ["OMP_NUM_THREADS"] = "1"  # the CLI runs the tests start inherit it
    torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
CONF = Path(str(importlib.resources.files(CONFIG_MODULE)))  # the config tree, for tests that read one file

# A run small enough for unit tests: synthetic images, the paper's small CNN at 1/16 width (four
# convolutions), a few epochs, five solver iterations, and so reverse-mode Hessian products: over
# five products a trace (its first in a process imports torch's tracing stack, seconds) costs more
# than it saves. The traced products run in table1's and fig3's paper profile in
# tests/test_every_experiment_runs.py (every method, VGG-11), in tests/test_masked.py and
# tests/test_architectures.py, and against reverse mode in tests/test_pipeline.py.
TINY = [
    "dataset=synthetic",
    "model=small_cnn",
    "model.width=0.0625",
    "train=fast",
    "train.epochs=2",
    "device=cpu",
    "hessian.samples=32",
    "selector.samples=32",
    "solver=cg",
    "solver.max_iter=5",
    "hessian.product=reverse",
    "update.max_steps=3",
    "task.target_class=3",
    "logger=none",
]


@pytest.fixture(scope="session", autouse=True)
def shared_model_cache(tmp_path_factory):
    """One trained-model cache (``$GIF_BENCH_CACHE``, the default of ``paths.cache``) for the
    whole session, shared by the xdist workers and the CLI runs they start: a tiny model is
    trained once per setting, not once per test. Its entries are written atomically, so two
    workers training the same setting both leave a whole file. A test about the cache itself
    gives the run its own (``make_cfg(own_cache=True)``, or ``paths.cache=`` on a command line)."""
    base = tmp_path_factory.getbasetemp()
    cache = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "model-cache"
    before = os.environ.get("GIF_BENCH_CACHE")
    os.environ["GIF_BENCH_CACHE"] = str(cache)
    yield cache
    if before is None:
        os.environ.pop("GIF_BENCH_CACHE", None)
    else:
        os.environ["GIF_BENCH_CACHE"] = before


@pytest.fixture
def make_cfg(tmp_path):
    def make(*overrides: str, root: Path | None = None, drop: tuple[str, ...] = (), own_cache: bool = False):
        """Compose TINY + overrides; ``drop`` removes TINY's overrides of those keys/groups;
        ``own_cache`` keeps trained models under ``<paths.root>/cache`` instead of the session's."""
        base = [o for o in TINY if o.split("=")[0].split(".")[0] not in drop]
        root = root or tmp_path
        cache = [f"paths.cache={root / 'cache'}"] if own_cache else []
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return compose("config", overrides=[*base, f"paths.root={root}", *cache, *overrides])

    return make


@pytest.fixture
def make_run(make_cfg):
    """:func:`make_cfg`'s config as the run's typed settings (validated, canonicalised)."""
    from gif_bench.config import run_settings

    return lambda *overrides, **kw: run_settings(make_cfg(*overrides, **kw))


def run_cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m gif_bench ARGS`` in a fresh process, as a user would run it."""
    full_env = {**os.environ, "TQDM_DISABLE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "gif_bench", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# TINY with a 1/16-width VGG-11 (BatchNorm buffers; more parameters than solver=exact takes)
TINY_VGG = ("model=vgg11", "model.width=0.0625")


def synthetic_like(cfg) -> list[str]:
    """Synthetic images of the experiment's own shape (and no logger): the shrink's group overrides."""
    channels, size = int(cfg.dataset.in_channels), int(cfg.dataset.image_size)
    return [
        "dataset=synthetic",
        f"dataset.in_channels={channels}",
        f"dataset.image_size={size}",
        f"dataset.mean=[{','.join(['0.5'] * channels)}]",
        f"dataset.std=[{','.join(['0.3'] * channels)}]",
        "logger=none",
    ]
