"""Shared body of the stage tasks: resolve the run, run the stage unless complete, publish a Prefect artifact."""

from __future__ import annotations

import re
from typing import Any

from prefect.artifacts import create_markdown_artifact

from selftrain.config import Config, load_config
from selftrain.pipeline import execute_stage, invalidate
from selftrain.plan import stage_state
from selftrain.report.summary import stage_markdown
from selftrain.store import RunStore


def run_stage_task(run: str, iteration: int, stage: str, rebuild_stale: bool) -> dict:
    store = RunStore(run)
    cfg = load_config(store.config_path)
    status = stage_state(cfg, store, iteration, stage).status
    if cfg.placement.dispatch == "pools" and status != "done":
        if status in ("stale", "damaged", "blocked"):
            if not rebuild_stale or status == "blocked":
                execute_stage(
                    cfg, store, iteration, stage
                )  # raises the one-line error, here, not on a worker
            invalidate(cfg, store, iteration, stage)  # moved aside before a worker starts on it
        manifest = dispatch_stage(cfg, store, iteration, stage, rebuild_stale)
    else:
        manifest = execute_stage(cfg, store, iteration, stage, rebuild_stale=rebuild_stale)
    key = re.sub(r"[^a-z0-9-]", "-", f"{store.run_dir.name}-iter-{iteration:03d}-{stage}".lower())
    create_markdown_artifact(
        key=key,
        markdown=stage_markdown(manifest, store.run_dir.name),
        description=f"{stage} output of {store.run_dir}",
    )
    return {"stage": stage, "iteration": iteration, "rows": manifest.rows, "stats": manifest.stats}


def task_options(cfg: Config) -> dict[str, Any]:
    """Per-run options for the stage tasks (`Task.with_options`): retries come from the run's config, since the
    @task decorators are fixed at import time. A retry is safe: the stage resumes from what it finished."""
    return {
        "retries": cfg.run.retries,
        "retry_delay_seconds": cfg.run.retry_delay_seconds,
        "retry_condition_fn": retry_unless_user_error,
    }


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry_condition_fn: a user error (bad config, stale or damaged store) would fail again."""
    from selftrain.runner import is_retryable

    del task, task_run
    error = state.data if isinstance(state.data, BaseException) else None
    return error is None or is_retryable(error)


def dispatch_stage(cfg: Config, store: RunStore, iteration: int, stage: str, rebuild_stale: bool):  # noqa: ANN201
    """Run `stage` as flow runs of deployment selftrain-stage/<placement pool> (flows/stage.py): one that
    runs it, and for a data-parallel stage `runs - 1` that join it; waits for all, then reads its manifest."""
    from concurrent.futures import ThreadPoolExecutor

    from prefect.deployments import run_deployment

    from selftrain.plan import StageCrashed

    place = getattr(cfg.placement, stage)
    name = f"selftrain-stage/{place.pool}"
    params = {"run": str(store.run_dir.resolve()), "iteration": iteration, "stage": stage}

    def one(join: bool):  # noqa: ANN202
        return run_deployment(
            name,
            parameters={**params, "rebuild_stale": rebuild_stale, "join": join},
            job_variables=place.job_variables or None,
            tags=["selftrain", f"stage:{stage}"],
        )

    with ThreadPoolExecutor(place.runs) as pool:
        runs = list(pool.map(one, [False] + [True] * (place.runs - 1)))
    failed = [r for r in runs if not (r.state and r.state.is_completed())]
    if failed:
        states = ", ".join(f"{r.name}: {r.state.name if r.state else '?'}" for r in failed)
        raise StageCrashed(
            f"iter-{iteration:03d}/{stage} on pool {place.pool}: flow run(s) failed ({states})"
        )
    manifest = store.manifest(iteration, stage)
    if manifest is None:
        raise StageCrashed(f"iter-{iteration:03d}/{stage}: its flow runs ended without a manifest")
    return manifest
