"""Prefect task for the questions stage (the work is in selftrain.stages.questions)."""

from __future__ import annotations

from prefect import task

from tasks.common import run_stage_task


@task(name="questions", tags=["selftrain"])
def questions(run: str, iteration: int, rebuild_stale: bool = False) -> dict:
    return run_stage_task(run, iteration, "questions", rebuild_stale)
