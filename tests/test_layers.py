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
    assert "2 kept, 0 broken" in proc.stdout


def test_an_import_running_up_a_layer_breaks_the_contract(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "gif_bench", src / "gif_bench", ignore=shutil.ignore_patterns("__pycache__"))
    data = src / "gif_bench" / "data.py"
    data.write_text(data.read_text() + "\nfrom . import runner  # noqa\n")  # the domain importing the pipeline
    proc = _lint(src)
    assert proc.returncode == 1 and "gif_bench.data -> gif_bench.runner" in proc.stdout, proc.stdout[-3000:]
