"""Prefect task for the score stage (the work is in selftrain.stages.score)."""

from __future__ import annotations

from prefect import task

from tasks.common import run_stage_task


@task(name="score", tags=["selftrain"])
def score(run: str, iteration: int, rebuild_stale: bool = False) -> dict:
    return run_stage_task(run, iteration, "score", rebuild_stale)
