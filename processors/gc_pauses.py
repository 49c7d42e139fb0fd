"""Full garbage collections without the worker's start-up objects in them.

A full (generation 2) collection scans every object the collector tracks. Once a worker
runs, most of them were made at start-up and live as long as the process: Faust, aiokafka,
librdkafka wrappers, Avro schemas and readers (hundreds of thousands of objects). Scanning
them all paused the event loop for 0.1-0.3 s now and then, which showed as the spread's
latency tail (docs/benchmarks.md). Once the worker has started, they are collected once and
frozen (`gc.freeze`): later full collections scan only what the streams made since.

Objects frozen are still freed when their last reference goes; only a reference cycle made
of frozen objects would stay, and at start-up there is no garbage left to freeze.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

log = logging.getLogger(__name__)


def freeze_startup_objects() -> int:
    """Collect, then move every object left to the permanent generation; how many."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def register(app: Any) -> None:
    """Freeze once the worker's services have started (a Faust app task)."""

    @app.task
    async def freeze_after_start() -> None:
        frozen = freeze_startup_objects()
        log.info("%d start-up objects left out of full garbage collections", frozen)
