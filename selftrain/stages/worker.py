"""`python -m selftrain.stages.worker RUN_DIR ITERATION sample K N`: data-parallel worker K of N.

Writes shards i with i % N == K into the stage folder its parent prepared; the parent writes the manifest.
"""

from __future__ import annotations

import argparse
import sys

from selftrain.config import load_config
from selftrain.logs import setup_logging
from selftrain.procs import die_with_parent
from selftrain.stages import open_stage, sample
from selftrain.store import RunStore


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
    # same fingerprint as the parent's attempt: the writer keeps the folder as it is
    with open_stage(cfg, store, args.iteration, args.stage) as (inputs, writer):
        assert writer is not None
        sample.run(cfg, inputs, writer, worker=(args.worker, args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
