"""Stage entry points. Each stage module has a pure core `run(cfg, inputs, writer) -> Manifest`; `open_stage`
is the one set-up every entry point uses (in-process, `python -m selftrain.stages RUN I STAGE`, the
data-parallel sampling workers, every `accelerate launch` rank): resolve the inputs from the store, prepare or
resume the stage folder, record a failure."""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Callable, Iterator

from selftrain.config import Config
from selftrain.plan import expected, policy_stage, questions_stage
from selftrain.spec import kind
from selftrain.stages.common import StageInputs
from selftrain.store import Manifest, RunStore, StageWriter, StoreError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def open_stage(
    cfg: Config,
    store: RunStore,
    iteration: int,
    stage: str,
    *,
    writes: bool = True,
    join: bool = False,
    setup_first: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
    exp: tuple[str, dict, dict] | None = None,
) -> Iterator[tuple[StageInputs, StageWriter | None]]:
    """(inputs, writer) of one stage; a failure inside the block is recorded in the stage folder.

    `writes`: this process prepares the folder (or resumes an attempt with the same fingerprint) and may write
    the manifest; false for the non-main ranks of a distributed stage, which get no writer. `join`: a worker
    joining a data-parallel stage that others work (never moves the folder aside). `setup_first`
    wraps the folder set-up (accelerate's `main_process_first`: rank 0 prepares it before the others look).
    `exp`: `plan.expected` of the stage where the caller has it (execute_stage), so it is computed once.
    """
    if exp is None:
        exp = expected(cfg, store, iteration, stage)
    if exp is None:
        raise StoreError(f"iter-{iteration:03d}/{stage}: an upstream stage is not complete")
    fp, conf, upstream = exp
    inputs = StageInputs(
        store,
        iteration,
        stage,
        fp,
        conf,
        upstream,
        policy_stage(cfg),
        questions_stage(cfg),
        cfg.store.lease_seconds,
    )
    log.info("iter-%03d/%s starting (fingerprint %s)", iteration, stage, fp)
    # the keys this stage read; the whole config is logged once per run (runner.prepare)
    log.debug(
        "iter-%03d/%s reads:\n%s", iteration, stage, "\n".join(f"  {k} = {v!r}" for k, v in conf.items())
    )
    if cfg.engine.threads:
        import torch

        torch.set_num_threads(cfg.engine.threads)
    writer = None
    with setup_first():
        if writes:
            writer = StageWriter(store.stage_dir(iteration, stage), fp, join=join)
    try:
        yield inputs, writer
    except BaseException as e:
        if writer is not None:
            writer.record_failure(e)
        raise


def run_stage(
    cfg: Config, store: RunStore, iteration: int, stage: str, exp: tuple[str, dict, dict] | None = None
) -> Manifest:
    """Run one stage in this process through its kind's module (`exp`: see open_stage)."""
    module = importlib.import_module(kind(stage).module)
    with open_stage(cfg, store, iteration, stage, exp=exp) as (inputs, writer):
        assert writer is not None
        return module.run(cfg, inputs, writer)


__all__ = ["open_stage", "run_stage"]
