"""The `self-training-iteration` flow: questions -> sample -> score -> pairs -> train -> evaluate."""

from __future__ import annotations

from prefect import flow

from flows import route_selftrain_logs
from selftrain.config import load_config
from selftrain.store import RunStore
from tasks import evaluate, pairs, questions, report, sample, score, train
from tasks.common import task_options

# DAG order; each task blocks until its stage is complete, so the chain is the dependency graph.
STAGE_TASKS = [questions.questions, sample.sample, score.score, pairs.pairs, train.train, evaluate.evaluate]


@flow(name="self-training-iteration")
def iteration(run: str, iteration: int, rebuild_stale: bool = False) -> dict:
    """One iteration of the run folder `run`: skips complete stages, resumes partial ones, stops on stale."""
    route_selftrain_logs()
    store = RunStore(run)
    with store.lock():
        opts = task_options(load_config(store.config_path))  # retries: the run's config, not the decorator
        results = {t.name: t.with_options(**opts)(run, iteration, rebuild_stale) for t in STAGE_TASKS}
    # what a person reads: this iteration's summary, then the run report so far (the flow's last artifact)
    report.summarize_iteration(run, iteration)
    report.report(run)
    return results
