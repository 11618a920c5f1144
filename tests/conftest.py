import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")

# A run small enough for unit tests: synthetic images, a tiny VGG, a few epochs.
TINY = [
    "dataset=synthetic",
    "model.width=0.0625",
    "train=fast",
    "train.epochs=2",
    "device=cpu",
    "hessian.samples=32",
    "selector.samples=32",
    "solver=cg",
    "solver.max_iter=5",
    "update.max_steps=3",
    "task.target_class=3",
    "logger=none",
]


@pytest.fixture
def make_cfg(tmp_path):
    def make(*overrides: str, root: Path | None = None, drop: tuple[str, ...] = ()):
        """Compose TINY + overrides; ``drop`` removes TINY's overrides of those keys/groups."""
        base = [o for o in TINY if o.split("=")[0].split(".")[0] not in drop]
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            return compose("config", overrides=[*base, f"paths.root={root or tmp_path}", *overrides])

    return make


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
