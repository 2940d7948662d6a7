"""Prefect task for the pairs stage (the work is in selftrain.stages.pairs)."""

from __future__ import annotations

from prefect import task

from tasks.common import run_stage_task


@task(name="pairs", tags=["selftrain"])
def pairs(run: str, iteration: int, rebuild_stale: bool = False) -> dict:
    return run_stage_task(run, iteration, "pairs", rebuild_stale)
