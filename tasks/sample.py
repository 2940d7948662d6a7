"""Prefect task for the sample stage (the work is in selftrain.stages.sample)."""

from __future__ import annotations

from prefect import task

from tasks.common import run_stage_task


@task(name="sample", tags=["selftrain"])
def sample(run: str, iteration: int, rebuild_stale: bool = False) -> dict:
    return run_stage_task(run, iteration, "sample", rebuild_stale)
