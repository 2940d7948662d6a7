"""One Prefect task per stage kind of selftrain.spec, named after it (the work is in selftrain.stages)."""

from __future__ import annotations

from typing import Any

from prefect import Task, task

from selftrain.spec import KINDS
from tasks.common import run_stage_task


def _stage_task(stage: str) -> Task[..., dict]:
    def run(run: str, iteration: int, rebuild_stale: bool = False) -> dict:
        return run_stage_task(run, iteration, stage, rebuild_stale)

    # Prefect keys a task by its function's qualified name: one name per stage kind
    run.__name__ = run.__qualname__ = stage
    run.__doc__ = f"The {stage} stage: {KINDS[stage].doc}."
    return task(name=stage, tags=["selftrain"])(run)


STAGE_TASKS: dict[str, Any] = {name: _stage_task(name) for name in KINDS}
