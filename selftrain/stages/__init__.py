"""Stage entry points. Each stage module has a pure core `run(cfg, inputs, writer) -> Manifest`;
`run_stage` resolves its inputs from the store and records failures; `python -m selftrain.stages RUN I STAGE`
runs one stage in its own process."""

from __future__ import annotations

import importlib
import logging

from selftrain.config import Config, dump_config
from selftrain.store import Manifest, RunStore, StageWriter, StoreError

log = logging.getLogger(__name__)

MODULES = {
    "questions": "selftrain.stages.questions",
    "sample": "selftrain.stages.sample",
    "score": "selftrain.stages.score",
    "pairs": "selftrain.stages.pairs",
    "train": "selftrain.stages.train",
    "evaluate": "selftrain.stages.evaluate",
}


def run_stage(cfg: Config, store: RunStore, iteration: int, stage: str) -> Manifest:
    from selftrain.pipeline import expected
    from selftrain.stages.common import StageInputs

    exp = expected(cfg, store, iteration, stage)
    if exp is None:
        raise StoreError(f"iter-{iteration:03d}/{stage}: an upstream stage is not complete")
    fp, conf, upstream = exp
    inputs = StageInputs(store, iteration, stage, fp, conf, upstream)
    log.info("iter-%03d/%s starting (fingerprint %s)", iteration, stage, fp)
    # the keys this stage read; the whole config is logged once per run (runner.prepare)
    log.debug("iter-%03d/%s reads:\n%s", iteration, stage, _describe(cfg, conf))
    if cfg.engine.threads:
        import torch

        torch.set_num_threads(cfg.engine.threads)
    writer = StageWriter(store.stage_dir(iteration, stage), fp)
    module = importlib.import_module(MODULES[stage])
    try:
        return module.run(cfg, inputs, writer)
    except BaseException as e:
        writer.record_failure(e)
        raise


def _describe(cfg: Config, conf: dict) -> str:
    del cfg
    return "\n".join(f"  {k} = {v!r}" for k, v in conf.items())


__all__ = ["run_stage", "MODULES", "dump_config"]
