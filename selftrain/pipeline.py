"""The iteration DAG without Prefect: what each stage reads, its fingerprint, its state, and running it.

Prefect tasks (tasks/) and the plain orchestrator both call `execute_stage`; this is where "skip what is
complete, stop on stale, resume what is partial" lives, so both behave the same.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selftrain.config import Config, flatten
from selftrain.engines.base import resolve_engine_name
from selftrain.procs import kill_group
from selftrain.store import (
    FAILED,
    STAGES,
    STARTED,
    Manifest,
    RunStore,
    StoreError,
    damage,
    fingerprint,
    marker,
    move_aside,
    verify_stage,
)

log = logging.getLogger(__name__)

# The config keys each stage reads: its fingerprint covers exactly these (plus upstream outputs).
STAGE_KEYS: dict[str, list[str]] = {
    # data.eval: the contamination guard drops training questions that are evaluation questions
    "questions": [
        "data.train",
        "data.eval",
        "data.questions_per_iteration",
        "data.mix",
        "data.shard_size",
        "run.seed",
    ],
    "sample": ["model.path", "model.dtype", "prompt", "sampling", "engine.name", "run.seed"],
    "score": ["model.path", "model.dtype", "prompt", "judge", "engine.name", "run.seed"],
    "pairs": ["pairs"],
    "train": ["model.path", "model.dtype", "training", "run.seed"],
    # judge and run.seed: best-of-K candidates are sampled with per-shard seeds and picked by the run's judge
    "evaluate": [
        "model.path",
        "model.dtype",
        "prompt",
        "evaluation",
        "data.eval",
        "engine.name",
        "judge",
        "run.seed",
    ],
}
# keys that do not change a stage's output (logging, launch plumbing)
IGNORED_KEYS = {
    "training.report_to",
    "training.logging_steps",
    "training.accelerate_config",
    "training.save_steps",
}


class StaleError(StoreError):
    """A completed stage no longer matches the config; the message names the keys that changed."""


class StageCrashed(StoreError):
    """A stage's own process died (engine crash, OOM kill): unlike other StoreErrors, worth a retry."""


def upstream_of(cfg: Config, iteration: int, stage: str) -> list[tuple[int, str]]:
    prev = [(iteration - 1, "train")] if iteration > 0 else []
    return {
        "questions": [],
        "sample": [(iteration, "questions"), *prev],
        "score": [(iteration, "sample"), *prev],
        "pairs": [(iteration, "score"), (iteration, "sample")],
        "train": [(iteration, "pairs"), *(prev if cfg.training.init == "previous" else [])],
        "evaluate": [(iteration, "train")],
    }[stage]


def downstream_of(stage: str) -> list[str]:
    """This stage and those after it in the same iteration (the DAG is a chain)."""
    return STAGES[STAGES.index(stage) :]


def stage_config(cfg: Config, stage: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key in STAGE_KEYS[stage]:
        sub = flatten(cfg.section(key), f"{key}.")
        flat.update({k: v for k, v in sub.items() if k not in IGNORED_KEYS})
    if stage == "questions":
        # the guard reads every row of an eval source whatever its limit, so a limit does not change the output
        flat = {k: v for k, v in flat.items() if not (k.startswith("data.eval.") and k.endswith(".limit"))}
    if "engine.name" in flat:
        flat["engine.name"] = resolve_engine_name(flat["engine.name"])
    return flat


@dataclass
class StageState:
    iteration: int
    stage: str
    status: str  # done | damaged | stale | partial | failed | missing | blocked
    reasons: list[str] = field(default_factory=list)
    manifest: Manifest | None = None


def expected(cfg: Config, store: RunStore, iteration: int, stage: str) -> tuple[str, dict, dict] | None:
    """(fingerprint, config keys, upstream output ids) if every upstream is complete, else None."""
    upstream: dict[str, str] = {}
    for it, st in upstream_of(cfg, iteration, stage):
        m = store.manifest(it, st)
        if m is None:
            return None
        upstream[f"iter-{it:03d}/{st}"] = m.output_id
    conf = stage_config(cfg, stage)
    return fingerprint(stage, conf, upstream), conf, upstream


def stage_state(cfg: Config, store: RunStore, iteration: int, stage: str) -> StageState:
    d = store.stage_dir(iteration, stage)
    m = store.manifest(iteration, stage)
    exp = expected(cfg, store, iteration, stage)
    if m is None:
        if marker(d, FAILED).exists():
            err = json.loads(marker(d, FAILED).read_text()).get("error", "")
            return StageState(iteration, stage, "failed", [err])
        if marker(d, STARTED).exists():
            return StageState(iteration, stage, "partial")
        return StageState(iteration, stage, "missing" if exp else "blocked")
    problems = damage(d, m)  # sizes only (a stat per file), and what `selftrain verify` recorded
    if problems:
        return StageState(iteration, stage, "damaged", problems, m)
    if exp is None:
        return StageState(iteration, stage, "stale", ["an upstream stage is missing"], m)
    fp, conf, upstream = exp
    if fp == m.fingerprint:
        return StageState(iteration, stage, "done", [], m)
    reasons = [
        f"{k}: {m.config.get(k)!r} -> {conf.get(k)!r}"
        for k in sorted(set(conf) | set(m.config))
        if conf.get(k) != m.config.get(k)
    ]
    reasons += [f"upstream {k} was rebuilt" for k in upstream if upstream[k] != m.upstream.get(k)]
    return StageState(iteration, stage, "stale", reasons or ["schema version changed"], m)


def rerun_command(store: RunStore, iteration: int, stage: str) -> str:
    return f"selftrain rerun {store.run_dir} --iteration {iteration} --stage {stage}"


def damaged_message(store: RunStore, state: StageState) -> str:
    return (
        f"iter-{state.iteration:03d}/{state.stage} is damaged ({'; '.join(state.reasons)}): "
        f"`{rerun_command(store, state.iteration, state.stage)}` redoes it (or run with --rebuild-stale)"
    )


def use_subprocess(cfg: Config, stage: str) -> bool:
    if stage in ("questions", "pairs"):
        return False
    if stage == "train" and cfg.training.accelerate_config:
        return True  # `accelerate launch` is a process tree of its own
    if cfg.engine.isolation != "auto":
        return cfg.engine.isolation == "subprocess"
    import importlib.util

    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    return has_cuda or resolve_engine_name(cfg.engine.name) == "vllm"


def execute_stage(
    cfg: Config, store: RunStore, iteration: int, stage: str, rebuild_stale: bool = False
) -> Manifest:
    """Run one stage unless it is complete. Raises StaleError when its output no longer matches the config."""
    state = stage_state(cfg, store, iteration, stage)
    where = f"iter-{iteration:03d}/{stage}"
    if state.status == "done":
        log.info("%s: complete, skipping", where)
        assert state.manifest is not None
        return state.manifest
    if state.status == "blocked":
        raise StoreError(f"{where}: an upstream stage is not complete")
    if state.status == "damaged":
        if not rebuild_stale:
            raise StoreError(damaged_message(store, state))
        invalidate(store, iteration, stage)
    if state.status == "stale":
        if not rebuild_stale:
            raise StaleError(
                f"{where} is stale ({'; '.join(state.reasons)}): rerun with --rebuild-stale to move it aside "
                f"and redo it, or `selftrain rerun {store.run_dir} --iteration {iteration} --stage {stage}`"
            )
        invalidate(store, iteration, stage)
    if state.status in ("partial", "failed"):
        log.info("%s: resuming an interrupted attempt", where)
    exp = expected(cfg, store, iteration, stage)
    assert exp is not None
    # Damaged inputs are named here, in one line, before a stage (maybe in a subprocess, under accelerate)
    # starts and fails on them with a library's traceback.
    for it, st in upstream_of(cfg, iteration, stage):
        verify_stage(store.stage_dir(it, st))
    if use_subprocess(cfg, stage):
        run_stage_subprocess(cfg, store, iteration, stage)
    else:
        from selftrain.stages import run_stage

        run_stage(cfg, store, iteration, stage)
    manifest = store.manifest(iteration, stage)
    if manifest is None:
        raise StoreError(f"{where} finished without writing its manifest")
    return manifest


def invalidate(store: RunStore, iteration: int, stage: str) -> list[Path]:
    """Move aside `stage` and everything after it in this iteration (never deletes)."""
    moved = []
    for st in downstream_of(stage):
        target = move_aside(store.stage_dir(iteration, st), "stale")
        if target:
            moved.append(target)
    return moved


def _relay(stream, logger: logging.Logger) -> None:  # noqa: ANN001
    for line in stream:
        if line.strip():
            logger.info("%s", line.rstrip().rsplit("\r", 1)[-1])


def run_stage_subprocess(cfg: Config, store: RunStore, iteration: int, stage: str) -> None:
    """Run a stage as `python -m selftrain.stages` (or under `accelerate launch` for distributed training), so
    the engine's memory goes back to the system when the stage ends."""
    cmd = [sys.executable, "-m", "selftrain.stages", str(store.run_dir), str(iteration), stage]
    if stage == "train" and cfg.training.accelerate_config:
        from selftrain.training.launch import accelerate_command

        cmd = accelerate_command(cfg, store.run_dir, iteration)
    log.info("launching %s", " ".join(cmd))
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Its own session, so that everything it starts (vLLM's engine-core process, accelerate's workers) can be
    # reaped as a group when it ends: a SIGKILLed stage must not leave an engine holding memory behind.
    proc = subprocess.Popen(
        cmd,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    store.record_child(proc.pid)  # a run that takes over this lock after a crash kills the group
    # Relay the child's output through our logger (under Prefect it lands in the task run's logs). A reader
    # thread, because the pipe reaches EOF only when every process holding it is gone: after a crash, vLLM's
    # engine-core process keeps it open until the group is killed below.
    # (run in a copy of this context: Prefect finds its task run through context variables)
    child_log = logging.getLogger(f"selftrain.stage.{stage}")
    relay = threading.Thread(target=contextvars.copy_context().run, args=(_relay, proc.stdout, child_log))
    relay.start()
    try:
        code = proc.wait()
    finally:
        kill_group(proc.pid)
        store.record_child(None)
        relay.join(timeout=30)
    if code != 0:
        raise StageCrashed(f"iter-{iteration:03d}/{stage} failed in its subprocess (exit code {code})")
