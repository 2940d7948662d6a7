"""Starting, resuming and rerunning a run, without Prefect (flows/ wraps the same steps as a Prefect DAG)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from selftrain.config import Config, ConfigError, dump_config
from selftrain.errors import DataError
from selftrain.fileio import atomic_write_text
from selftrain.methods import method_of
from selftrain.model_fetch import GGUF_SUFFIX, convert_gguf, fetch_model
from selftrain.pipeline import execute_stage, invalidate
from selftrain.plan import StageCrashed, StaleError, damaged_message, method_stages, stage_state, upstream_of
from selftrain.recipes import load_config
from selftrain.registry import UnknownNameError
from selftrain.store import RunStore, StoreError, verify_stage
from selftrain.tiny import ensure_model
from selftrain.training.launch import check_launch_config

log = logging.getLogger(__name__)

IterationFn = Callable[[str, int, bool], object]


def prepare(cfg: Config, store: RunStore, rebuild_stale: bool) -> None:
    """Before anything is written: the model exists (or is built), and no completed stage is stale unless the
    user asked to rebuild. Then the resolved config is recorded in the run folder. Call under the run lock."""
    if cfg.training.accelerate_config:
        check_launch_config(cfg)
    if cfg.model.fetch is not None and not Path(cfg.model.path).expanduser().exists():
        log.warning(
            "model.path %s is missing: fetching %s there (model.fetch)", cfg.model.path, cfg.model.fetch
        )
        if cfg.model.fetch.endswith(GGUF_SUFFIX):
            convert_gguf(Path(cfg.model.fetch).expanduser(), Path(cfg.model.path).expanduser())
        else:
            fetch_model(cfg.model.fetch, Path(cfg.model.path).expanduser())
    ensure_model(cfg.model.path, cfg.model.bootstrap)
    if not rebuild_stale:
        for it in range(cfg.run.iterations):
            for stage in method_stages(cfg):
                st = stage_state(cfg, store, it, stage)
                if st.status == "damaged":
                    raise StoreError(damaged_message(store, st))
                if st.status == "stale":
                    raise StaleError(
                        f"iter-{it:03d}/{stage} is stale ({'; '.join(st.reasons)}). Nothing was changed. "
                        f"Rerun with --rebuild-stale to move stale outputs aside and redo them, or undo the change."
                    )
    atomic_write_text(store.config_path, dump_config(cfg))
    log.info("run %s, config (%s):\n%s", store.run_dir, store.config_path, dump_config(cfg).rstrip())


def init_run(cfg: Config) -> RunStore:
    """Create (or update) the run folder without running a stage: the model is there (or built), nothing
    complete is stale, config.yaml is written. What a Prefect deployment needs before its first flow run,
    since the flows read the run's config.yaml and do not build models."""
    store = RunStore(cfg.run_dir())
    with store.lock():
        prepare(cfg, store, rebuild_stale=False)
    return store


def run_iteration(run_dir: str, iteration: int, rebuild_stale: bool = False) -> None:
    """One iteration's stages in DAG order; complete stages are skipped, partial ones resume."""

    store = RunStore(run_dir)
    cfg = load_config(store.config_path)
    for stage in method_stages(cfg):
        for attempt in range(cfg.run.retries + 1):
            try:
                execute_stage(cfg, store, iteration, stage, rebuild_stale=rebuild_stale)
                break
            except Exception as e:  # noqa: BLE001 - decided by is_retryable
                if attempt == cfg.run.retries or not is_retryable(e):
                    raise
                log.warning(
                    "iter-%03d/%s failed (%s: %s); retry %d of %d in %gs, resuming from what it finished",
                    iteration,
                    stage,
                    type(e).__name__,
                    str(e).splitlines()[0] if str(e) else "",
                    attempt + 1,
                    cfg.run.retries,
                    cfg.run.retry_delay_seconds,
                )
                time.sleep(cfg.run.retry_delay_seconds)


def is_retryable(error: BaseException) -> bool:
    """A crash (engine, process, OOM) may pass on a retry; a user error (bad config or data, stale or damaged
    store, locked run) fails the same way again, so it is not retried."""

    if isinstance(error, StageCrashed):
        return True
    return not isinstance(error, (ConfigError, DataError, UnknownNameError, FileNotFoundError, StoreError))


def run(cfg: Config, rebuild_stale: bool = False, iteration_fn: IterationFn = run_iteration) -> RunStore:
    store = RunStore(cfg.run_dir())
    with store.lock():
        prepare(cfg, store, rebuild_stale)
        for it in range(cfg.run.iterations):
            iteration_fn(str(store.run_dir), it, rebuild_stale)
    return store


def rerun(
    store: RunStore, iteration: int, stage: str, iteration_fn: IterationFn = run_iteration
) -> list[str]:
    """Move aside `stage` and what follows it in `iteration`, redo them; returns what later became stale."""

    cfg = load_config(store.config_path)
    if stage not in method_stages(cfg):
        raise StoreError(
            f"method {cfg.method} has no {stage} stage (its stages: {', '.join(method_stages(cfg))})"
        )
    with store.lock():
        # inputs must be intact before anything is moved aside, or a failed rerun would leave a hole; the
        # upstream may be a policy (adapter files, no shards), so check checksums rather than read a table
        for it, st in upstream_of(cfg, iteration, stage):
            verify_stage(store.stage_dir(it, st))
        moved = invalidate(cfg, store, iteration, stage)
        for path in moved:
            log.info("moved aside: %s", path)
        iteration_fn(str(store.run_dir), iteration, False)
        stale = []
        for it in store.iterations_on_disk():
            if it > iteration:
                stale += [
                    f"iter-{it:03d}/{s}"
                    for s in method_stages(cfg)
                    if stage_state(cfg, store, it, s).status == "stale"
                ]
    return stale


def accuracy_table(store: RunStore) -> list[tuple[int, str, str, float, int, int | None, float | None]]:
    """(iteration, model, source, greedy accuracy, n, best-of K, best-of-K accuracy) from each completed
    evaluation stage of the run's method; the last two are None where best-of-K evaluation was off."""
    import yaml

    config = yaml.safe_load(store.config_path.read_text()) if store.config_path.exists() else None
    stage = method_of(config if isinstance(config, dict) else {}).evaluation
    rows = []
    for it in store.iterations_on_disk():
        m = store.manifest(it, stage)
        if m is None:
            continue
        for model, by_src in m.stats.get("metrics", {}).items():
            for src, cell in by_src.items():
                best = (cell.get("best_of_k"), cell.get("best_of_accuracy"))
                rows.append((it, model, src, cell["accuracy"], cell["n"], *best))
    return rows


JUDGE_STATS = (
    "judge_pair_agreement",
    "judge_pair_ties",
    "judge_auroc_within",
    "unparsable_rate",
    "parse_rate",
    "mean_score",
)


def judge_table(store: RunStore) -> list[tuple[int, dict]]:
    """(iteration, the score stage's judge-quality stats) for each completed score stage: pairwise agreement
    with reference correctness, ties, within-question AUROC, unparsable-judgment rate (llm_as_judge), the share
    of samples the judge could read (parse_rate) and the mean score. Empty for a method without a score stage."""
    rows = []
    for it in store.iterations_on_disk():
        m = store.manifest(it, "score")
        if m is not None:
            rows.append((it, {k: m.stats.get(k) for k in JUDGE_STATS}))
    return rows
