"""gif-bench installed as a plain (non-editable) package runs from any directory: the config
tree ships inside it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_non_editable_install_composes_and_runs_from_another_directory(tmp_path):
    source, target, elsewhere = tmp_path / "source", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):  # a copy: the build leaves its build/ folder there
        shutil.copy(ROOT / name, source / name)
    for folder in ("src", "conf"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    assert (target / "gif_bench" / "conf" / "experiment" / "profile" / "table1_cpu.yaml").is_file()
    env = {**os.environ, "PYTHONPATH": str(target), "TQDM_DISABLE": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=elsewhere, env=env, capture_output=True, text=True)

    where = run("-c", "import gif_bench; print(gif_bench.__file__)")
    assert where.stdout.startswith(str(target)), where.stdout + where.stderr  # the installed copy, not the checkout
    composed = run("-m", "gif_bench", "experiment=quickstart", "--cfg", "job")
    assert composed.returncode == 0, composed.stderr[-2000:]
    assert "name: quickstart" in composed.stdout and "width: 0.25" in composed.stdout
    tiny = ["dataset=synthetic", "model=small_cnn", "model.width=0.0625", "train=fast", "train.epochs=1"]
    tiny += ["device=cpu", "hessian.samples=16", "selector.samples=16", "solver=cg", "solver.max_iter=3"]
    tiny += ["update.max_steps=2", "task.target_class=3", "logger=none", "paths.root=out"]
    ran = run("-m", "gif_bench", *tiny)
    assert ran.returncode == 0, ran.stderr[-2000:]
    (row_file,) = (elsewhere / "out" / "results" / "default").glob("*.json")
    assert json.loads(row_file.read_text())["status"] == "ok"
