"""Shared body of the stage tasks: resolve the run, run the stage unless complete, publish a Prefect artifact."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from prefect.artifacts import create_markdown_artifact

from selftrain.config import Config
from selftrain.pipeline import execute_stage, invalidate
from selftrain.plan import stage_state
from selftrain.recipes import load_config
from selftrain.report.summary import stage_markdown
from selftrain.store import RunStore

log = logging.getLogger(__name__)


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


POLL_S = 2.0  # how often the dispatcher looks at the stage's manifest and its flow runs' states


def dispatch_stage(cfg: Config, store: RunStore, iteration: int, stage: str, rebuild_stale: bool):  # noqa: ANN201
    """Run `stage` as flow runs of deployment selftrain-stage/<placement pool> (flows/stage.py): one that
    runs it, and for a data-parallel stage `runs - 1` that join it; returns its manifest.

    The stage is done when its manifest exists, whoever wrote it, not when every flow run has ended: the flow
    run of a worker that died (SIGKILL, a preempted node) never reaches a final state by itself (Prefect 3.7
    has no dead-worker detection; the zombie automation of flows/zombies.py crashes it minutes later, if
    deployed), while the other runs take its shards over once its leases expire and write the manifest.
    Runs still going once the manifest exists get `store.lease_seconds` to end and are then left as they are.
    The stage failed when every run ended and there is no manifest."""
    from prefect import get_client
    from prefect.deployments import run_deployment

    from selftrain.plan import StageCrashed
    from selftrain.spec import Runs, kind
    from selftrain.training.node import head_file, machines

    place = getattr(cfg.placement, stage)
    name = f"selftrain-stage/{place.pool}"
    params = {"run": str(store.run_dir.resolve()), "iteration": iteration, "stage": stage}
    # a data-parallel stage: one run plus `runs - 1` joining it; a multi-node training: one run per machine,
    # rank 0 the head wherever it lands (it publishes its address for the others: no stale one may be read)
    extra = [{"join": True}] * (place.runs - 1)
    if kind(stage).runs is Runs.TRAINER and (nodes := machines(cfg)) > 1:
        head_file(store, iteration, stage).unlink(missing_ok=True)
        extra = [{"machine_rank": r} for r in range(1, nodes)]
    ids = [
        run_deployment(  # timeout 0: created and scheduled, not waited for
            name,
            parameters={**params, "rebuild_stale": rebuild_stale, **more},
            job_variables=place.job_variables or None,
            tags=["selftrain", f"stage:{stage}"],
            timeout=0,
        ).id
        for more in [{"join": False}, *extra]
    ]
    where = f"iter-{iteration:03d}/{stage} on pool {place.pool}"
    done_at = None
    with get_client(sync_client=True) as client:
        while True:
            runs = [client.read_flow_run(i) for i in ids]
            ended = [r for r in runs if r.state is not None and r.state.is_final()]
            manifest = store.manifest(iteration, stage)
            if manifest is None and len(ended) == len(runs):
                states = ", ".join(f"{r.name}: {r.state.name if r.state else '?'}" for r in runs)
                raise StageCrashed(f"{where}: its flow runs ended without a manifest ({states})")
            if manifest is not None:
                done_at = done_at or time.monotonic()
                if len(ended) == len(runs) or time.monotonic() - done_at > cfg.store.lease_seconds:
                    break
            time.sleep(POLL_S)
    for r in runs:
        if r.state is None or not r.state.is_completed():
            log.warning(
                "%s: complete, but flow run %s is %s (a worker that died or failed; its shards were redone)",
                where,
                r.name,
                r.state.name if r.state else "not started",
            )
    return manifest
