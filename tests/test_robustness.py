"""Nothing is lost and nothing is silently reused: corrupt caches are rebuilt, W&B never costs a
result row, and a W&B run that cannot be made is refused before any work. (``method=retrain``:
the oracle alone trains and caches models and logs to W&B, without an edit to wait for.)"""

import logging

import pytest
from conftest import TINY, run_cli

from gif_bench import runner


def test_a_truncated_cached_model_is_moved_aside_and_rebuilt(make_cfg, tmp_path, caplog):
    first = runner.run(make_cfg("method=retrain", own_cache=True))
    cached = sorted((tmp_path / "cache" / "models").glob("*.pt"))
    assert len(cached) == 2  # the model and the retrained oracle
    for path in cached:  # as a full disk or an interrupted copy leaves them
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="gif_bench.train"):
        again = runner.run(make_cfg("method=retrain", "force=true", own_cache=True))
    notices = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(notices) == 2 and all("\n" not in n for n in notices)
    assert {n.split()[2] for n in notices} == {str(p) for p in cached}  # each names its file
    assert again["status"] == "ok" and again["model_cached"] is False and again["retrain_cached"] is False
    assert again["before_test_acc"] == first["before_test_acc"]  # the same weights, trained again
    assert all(p.exists() and p.with_name(p.name + ".corrupt").exists() for p in cached)
    assert (
        runner.run(make_cfg("method=retrain", "force=true", own_cache=True))["model_cached"] is True
    )  # the rebuilt file is read


def test_a_cached_file_of_another_model_is_not_reused(make_cfg, tmp_path, caplog):
    import torch

    runner.run(make_cfg("method=retrain", own_cache=True))
    path = next(iter(sorted((tmp_path / "cache" / "models").glob("*.pt"))))
    torch.save({"model": {"foreign.weight": torch.zeros(1)}, "seconds": 1.0}, path)
    with caplog.at_level(logging.WARNING, logger="gif_bench.train"):
        row = runner.run(make_cfg("method=retrain", "force=true", own_cache=True))
    assert row["status"] == "ok" and any("cannot be read" in r.getMessage() for r in caplog.records)


def _no_credentials(tmp_path) -> dict:
    """An environment in which W&B finds no credentials: no key, no .netrc, no settings."""
    home = tmp_path / "home"
    home.mkdir()
    return {
        "HOME": str(home),
        "WANDB_API_KEY": "",
        "NETRC": str(home / "no-netrc"),
        "WANDB_CONFIG_DIR": str(home / "wandb-config"),
    }


def test_online_wandb_without_credentials_is_refused_before_any_work(tmp_path):
    root = tmp_path / "out"
    proc = run_cli(*TINY, f"paths.root={root}", "logger=wandb", "logger.mode=online", env=_no_credentials(tmp_path))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("gif-bench: error: logger.mode=online: no W&B credentials")
    assert "wandb login" in lines[0] and "logger.mode=offline" in lines[0]
    assert not root.exists() or list(root.iterdir()) == []


def test_wandb_failing_to_start_keeps_the_row(make_cfg, monkeypatch):
    import wandb

    def refuse(*_args, **_kwargs):
        raise wandb.errors.CommError("the W&B server cannot be reached")

    monkeypatch.setattr(wandb, "init", refuse)
    row = runner.run(make_cfg("method=retrain", "logger=wandb", "logger.mode=offline"))
    assert row["status"] == "ok" and row["wandb_run_id"] is None
    assert row["wandb_error"] == "init: CommError: the W&B server cannot be reached"


def test_wandb_failing_mid_run_keeps_the_row(make_cfg, monkeypatch, tmp_path):
    import json

    import wandb
    from wandb.sdk.wandb_run import Run

    def broken_log(self, *_args, **_kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(Run, "log", broken_log)
    cfg = make_cfg("method=retrain", "logger=wandb", "logger.mode=offline")
    row = runner.run(cfg)
    wandb.teardown()
    assert row["status"] == "ok" and row["wandb_error"] == "log: OSError: No space left on device"
    (path,) = (tmp_path / "results" / "default").glob("*.json")
    assert json.loads(path.read_text())["test_acc"] == row["test_acc"]


@pytest.mark.parametrize("key", ["WANDB_API_KEY"])
def test_a_key_in_the_environment_counts_as_credentials(monkeypatch, tmp_path, key):
    from gif_bench.tracking import has_credentials

    for name, value in _no_credentials(tmp_path).items():
        monkeypatch.setenv(name, value)
    assert not has_credentials()
    monkeypatch.setenv(key, "x" * 40)
    assert has_credentials()


def test_a_cached_model_with_non_finite_weights_is_not_reused(make_cfg, tmp_path, caplog):
    import torch

    runner.run(make_cfg("method=retrain", own_cache=True))
    path = next(iter(sorted((tmp_path / "cache" / "models").glob("*.pt"))))
    state = torch.load(path, weights_only=True)
    first = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][first] = torch.full_like(state["model"][first], float("nan"))  # as a diverged run left it
    torch.save(state, path)
    with caplog.at_level(logging.WARNING, logger="gif_bench.train"):
        row = runner.run(make_cfg("method=retrain", "force=true", own_cache=True))
    assert row["status"] == "ok" and any("not finite" in r.getMessage() for r in caplog.records)
    assert path.with_name(path.name + ".corrupt").exists()


def test_a_diverging_recipe_stops_in_one_line_writes_its_failed_row_and_caches_nothing(tmp_path):
    import json

    proc = run_cli(*TINY, "train.lr=1e12", f"paths.root={tmp_path}", f"paths.cache={tmp_path}/cache")
    lines = [line for line in proc.stderr.splitlines() if line.startswith("gif-bench")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1 and "the loss became" in lines[0] and "lower train.lr" in lines[0]
    (row,) = (tmp_path / "results").rglob("*.json")
    assert json.loads(row.read_text())["status"] == "failed"
    assert not list((tmp_path / "cache").rglob("*.pt"))  # no NaN model kept for the next run
