"""Prefect task for the evaluate stage (the work is in selftrain.stages.evaluate)."""

from __future__ import annotations

from prefect import task

from tasks.common import run_stage_task


@task(name="evaluate", tags=["selftrain"])
def evaluate(run: str, iteration: int, rebuild_stale: bool = False) -> dict:
    return run_stage_task(run, iteration, "evaluate", rebuild_stale)
