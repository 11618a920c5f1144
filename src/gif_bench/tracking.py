"""Experiment tracking: one W&B run per job (offline by default), or nothing.

W&B is a mirror of the local result row, never a condition for it: a run that W&B cannot start,
or that fails while logging, goes on without it, and the row records why (``wandb_error``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .settings import Logger

log = logging.getLogger(__name__)


def has_credentials() -> bool:
    """Whether W&B finds credentials (``WANDB_API_KEY``, an identity token file, its settings
    file or ``.netrc``) without asking for them and without the network."""
    import wandb

    try:
        return bool(wandb.login(verify=False, prompt=False))
    except TypeError:  # a wandb before login(prompt=...): look where it would, without asking
        import netrc
        from urllib.parse import urlparse

        if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
            return True
        host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
        try:
            return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
        except (OSError, netrc.NetrcParseError):
            return False


def init_wandb(logger: Logger, root: Path, group: str, **kwargs: Any):
    """A W&B run with ``logger``'s project, entity, mode and tags, under ``root``, in the
    experiment's ``group``; ``kwargs`` go to ``wandb.init``."""
    import wandb

    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    return wandb.init(
        project=logger.project,
        entity=logger.entity,
        mode=logger.mode,
        dir=str(root),
        group=group,
        tags=list(logger.tags),
        reinit="finish_previous",
        settings=wandb.Settings(console="off", x_disable_stats=True),
        **kwargs,
    )


class NullTracker:
    run_id: str | None = None
    error: str | None = None  # why W&B stopped mirroring this run, if it did

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def summary(self, row: dict[str, Any]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


class WandbTracker(NullTracker):
    """A W&B run whose config is the run's resolved config and whose summary is the result row.

    The first W&B error is logged once and recorded in ``error``; the run is then left alone.
    """

    def __init__(self, logger: Logger, root: Path, group: str, **run: Any) -> None:
        self._run = init_wandb(logger, root, group, **run)
        self.run_id = self._run.id

    def _safely(self, action: str, call) -> None:
        if self.error is not None:
            return
        try:
            call()
        except Exception as err:  # W&B's own errors, the network's, the disk's
            self.error = f"{action}: {_reason(err)}"
            log.warning("W&B failed (%s); the run goes on and its row is written locally", self.error)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._safely("log", lambda: self._run.log(metrics, step=step))

    def summary(self, row: dict[str, Any]) -> None:
        self._safely("summary", lambda: self._run.summary.update({k: v for k, v in row.items() if v is not None}))

    def finish(self, exit_code: int = 0) -> None:
        try:
            self._run.finish(exit_code=exit_code)
        except Exception as err:
            log.warning("W&B failed to finish its run (%s); the row is written locally", _reason(err))


def start(logger: Logger, root: Path, group: str, **run: Any) -> NullTracker:
    """The tracker of ``logger`` for a run of ``group`` (``run``: the W&B run's ``config``,
    ``job_type`` and ``name``); if W&B cannot start a run, a :class:`NullTracker` whose ``error``
    says why."""
    if logger.mirrors:
        try:
            return WandbTracker(logger, root, group, **run)
        except Exception as err:
            tracker = NullTracker()
            tracker.error = f"init: {_reason(err)}"
            log.warning("W&B could not start a run (%s); the row is written locally", tracker.error)
            return tracker
    return NullTracker()
