"""The `self-training-iteration` flow: the run's method as a DAG of stage tasks (for CORE-PO the chain
questions -> sample -> score -> pairs -> train -> evaluate); a stage starts once the stages it reads are
complete, so stages that do not read each other run at the same time."""

from __future__ import annotations

from prefect import flow
from prefect.futures import PrefectFuture, as_completed, wait

from flows import route_selftrain_logs
from selftrain.plan import dag, ready
from selftrain.recipes import load_config
from selftrain.store import RunStore
from tasks import report
from tasks.common import task_options
from tasks.stages import STAGE_TASKS


@flow(name="self-training-iteration")
def iteration(run: str, iteration: int, rebuild_stale: bool = False) -> dict:
    """One iteration of the run folder `run`: skips complete stages, resumes partial ones, stops on stale."""
    route_selftrain_logs()
    store = RunStore(run)
    with store.lock():
        cfg = load_config(store.config_path)
        opts = task_options(cfg)  # retries: the run's config, not the decorator
        graph = dag(cfg)
        results: dict[str, dict] = {}
        running: dict[PrefectFuture, str] = {}

        def start_ready() -> None:
            for stage in ready(graph, set(results), {*results, *running.values()}):
                task = STAGE_TASKS[stage].with_options(**opts)
                running[task.submit(run, iteration, rebuild_stale)] = stage

        start_ready()
        while running:
            done = next(as_completed(list(running)))
            stage = running.pop(done)
            try:
                results[stage] = done.result()
            except BaseException:
                # a failed stage raises its own error, and nothing that reads it starts; stages already
                # running finish first (they write in the run folder, which the lock guards)
                wait(list(running))
                raise
            start_ready()
    # what a person reads: this iteration's summary, then the run report so far (the flow's last artifact)
    report.summarize_iteration(run, iteration)
    report.report(run)
    return {stage: results[stage] for stage in graph}
