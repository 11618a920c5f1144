"""One benchmark run from the command line's composed config: ``run(cfg)`` checks it, turns it
into the run's typed settings (:func:`gif_bench.config.settle`) and records the run
(:func:`gif_bench.record.record`), returning its result row."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from .config import not_a_run, run_settings
from .record import record

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Validate and canonicalise ``cfg`` (in place), then record the run it describes.

    A job of the solver study's sweep that is not a run (:func:`gif_bench.config.not_a_run`)
    returns ``{"status": "skipped"}``.
    """
    if (why := not_a_run(cfg)) is not None:
        log.info("skipped: %s", why)
        return {"status": "skipped", "reason": why}
    return record(run_settings(cfg))
