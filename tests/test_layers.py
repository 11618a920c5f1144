"""The layer contracts of pyproject.toml ([tool.importlinter]) hold for the package, and they
catch an import that runs up a layer."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"]


def _lint(src: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LINT, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=src.parent,
        env={"PYTHONPATH": str(src), "PATH": ""},
        capture_output=True,
        text=True,
    )


def test_every_module_imports_only_from_its_own_layer_or_below():
    proc = _lint(ROOT / "src")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 kept, 0 broken" in proc.stdout  # the layers, the library's imports, Hydra at the edges


def _copy_with(tmp_path: Path, module: str, line: str) -> Path:
    """A copy of the package whose ``module`` (a path under gif_bench/) ends with ``line``."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "gif_bench", src / "gif_bench", ignore=shutil.ignore_patterns("__pycache__"))
    path = src / "gif_bench" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    return src


def test_an_import_running_up_a_layer_breaks_the_contract(tmp_path):
    proc = _lint(_copy_with(tmp_path, "data.py", "from . import record"))  # the domain importing the run
    assert proc.returncode == 1 and "gif_bench.data -> gif_bench.record" in proc.stdout, proc.stdout[-3000:]


def test_hydras_config_below_the_edges_breaks_the_contract(tmp_path):
    proc = _lint(_copy_with(tmp_path, "tasks/class_removal.py", "from omegaconf import DictConfig"))
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "gif_bench.tasks.class_removal -> omegaconf" in proc.stdout and "BROKEN" in proc.stdout
