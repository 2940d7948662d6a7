"""Running a run's stages: skip what is complete, stop on stale, resume what is partial, in this process or in
its own (a subprocess, or `accelerate launch` for distributed training).

Prefect tasks (tasks/) and the plain orchestrator both call `execute_stage`, so both behave the same. What a
stage reads and whether it is complete comes from selftrain.plan; what it is, from selftrain.spec.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

from selftrain.config import Config
from selftrain.engines.base import resolve_engine_name
from selftrain.leases import clear
from selftrain.plan import (
    StageCrashed,
    StageRefused,
    StaleError,
    damaged_message,
    downstream_of,
    rerun_command,
    stage_state,
    upstream_of,
)
from selftrain.procs import USER_ERROR_EXIT, kill_group
from selftrain.spec import Runs, kind
from selftrain.stages import run_stage
from selftrain.store import FAILED, Manifest, RunStore, StoreError, marker, move_aside, verify_stage
from selftrain.training.launch import accelerate_command

log = logging.getLogger(__name__)


def use_subprocess(cfg: Config, stage: str) -> bool:
    """Whether `stage` runs in its own process, from where its kind runs (selftrain.spec.Runs)."""
    runs = kind(stage).runs
    if runs is Runs.INLINE:
        return False
    if runs is Runs.TRAINER and cfg.training.accelerate_config:
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

        clear(
            store.stage_dir(iteration, stage)
        )  # lease files of a worker killed after the manifest was written
        assert state.manifest is not None
        return state.manifest
    if state.status == "blocked":
        raise StoreError(f"{where}: an upstream stage is not complete")
    if state.status == "damaged":
        if not rebuild_stale:
            raise StoreError(damaged_message(store, state))
        invalidate(cfg, store, iteration, stage)
    if state.status == "stale":
        if not rebuild_stale:
            raise StaleError(
                f"{where} is stale ({'; '.join(state.reasons)}): rerun with --rebuild-stale to move it aside "
                f"and redo it, or `{rerun_command(store, iteration, stage)}`"
            )
        invalidate(cfg, store, iteration, stage)
    if state.status in ("partial", "failed"):
        log.info("%s: resuming an interrupted attempt", where)
    exp = state.expected  # the inputs do not change below: `invalidate` moves this stage and its readers only
    assert exp is not None
    # Damaged inputs are named here, in one line, before a stage (maybe in a subprocess, under accelerate)
    # starts and fails on them with a library's traceback.
    for it, st in upstream_of(cfg, iteration, stage):
        verify_stage(store.stage_dir(it, st))
    if use_subprocess(cfg, stage):
        run_stage_subprocess(cfg, store, iteration, stage)
    else:
        run_stage(cfg, store, iteration, stage, exp)
    manifest = store.manifest(iteration, stage)
    if manifest is None:
        raise StoreError(f"{where} finished without writing its manifest")
    return manifest


def invalidate(cfg: Config, store: RunStore, iteration: int, stage: str) -> list[Path]:
    """Move aside `stage` and every stage of this iteration that reads it (never deletes)."""
    moved = []
    for st in downstream_of(cfg, stage):
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
    if kind(stage).runs is Runs.TRAINER and cfg.training.accelerate_config:
        cmd = accelerate_command(cfg, store.run_dir, iteration, stage)
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
    if code == USER_ERROR_EXIT:
        raise StageRefused(f"iter-{iteration:03d}/{stage}: {_recorded_error(store, iteration, stage)}")
    if code != 0:
        raise StageCrashed(f"iter-{iteration:03d}/{stage} failed in its subprocess (exit code {code})")


def _recorded_error(store: RunStore, iteration: int, stage: str) -> str:
    """The one-line error a stage's process recorded in its folder before it exited USER_ERROR_EXIT."""
    try:
        error = json.loads(marker(store.stage_dir(iteration, stage), FAILED).read_text())["error"]
    except (OSError, ValueError, KeyError):
        return "stopped on a user error (its log above says which)"
    # "ConfigError: judge.x: ..." -> the message, which names the field
    return error.partition(": ")[2] or error
