"""Prefect task for the train stage (the work is in selftrain.stages.train)."""

from __future__ import annotations

from prefect import task

from tasks.common import run_stage_task


@task(name="train", tags=["selftrain"])
def train(run: str, iteration: int, rebuild_stale: bool = False) -> dict:
    return run_stage_task(run, iteration, "train", rebuild_stale)
