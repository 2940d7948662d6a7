"""`python -m selftrain.stages.worker RUN_DIR ITERATION sample K N`: data-parallel worker K of N.

Writes shards i with i % N == K into the stage folder its parent prepared; the parent writes the manifest.
"""

from __future__ import annotations

import argparse
import sys

from selftrain.config import load_config
from selftrain.logs import setup_logging
from selftrain.pipeline import expected
from selftrain.procs import die_with_parent
from selftrain.stages import sample
from selftrain.stages.common import StageInputs
from selftrain.store import RunStore, StageWriter, StoreError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m selftrain.stages.worker")
    parser.add_argument("run_dir")
    parser.add_argument("iteration", type=int)
    parser.add_argument("stage", choices=["sample"])
    parser.add_argument("worker", type=int)
    parser.add_argument("workers", type=int)
    args = parser.parse_args(argv)
    setup_logging()
    die_with_parent()
    store = RunStore(args.run_dir)
    cfg = load_config(store.config_path)
    exp = expected(cfg, store, args.iteration, args.stage)
    if exp is None:
        raise StoreError(f"iter-{args.iteration:03d}/{args.stage}: an upstream stage is not complete")
    inputs = StageInputs(store, args.iteration, args.stage, *exp)
    # same fingerprint as the parent's attempt: the writer keeps the folder as it is
    writer = StageWriter(store.stage_dir(args.iteration, args.stage), inputs.fingerprint)
    sample.run(cfg, inputs, writer, worker=(args.worker, args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
