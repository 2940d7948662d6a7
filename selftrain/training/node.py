"""One machine's ranks of a multi-node training: `python -m selftrain.training.node RUN_DIR ITERATION
--machine-rank R [--stage train]`, run on every node but the head (machine rank 0, which `selftrain run` starts
itself when the train stage comes), in a checkout that sees the run folder on the shared filesystem.

It waits until the stage's inputs are complete (a node can be started with the run), then runs the same
`accelerate launch` as the head with `--machine_rank R`: the ranks meet at the config's main_process_ip and
main_process_port. Rank 0 alone prepares the folder and writes the manifest; the others write their share of
each checkpoint (DeepSpeed ZeRO shards) into the shared stage folder, so a relaunch of every node resumes from
the newest complete checkpoint, as on one machine. Exit status: accelerate's (0 when the stage was already
complete).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time

from selftrain.config import load_config
from selftrain.logs import setup_logging
from selftrain.plan import expected
from selftrain.procs import kill_group
from selftrain.store import RunStore
from selftrain.training.launch import accelerate_command

log = logging.getLogger(__name__)


def run_node(store: RunStore, iteration: int, stage: str, machine_rank: int, wait_s: float) -> int:
    end = time.monotonic() + wait_s
    # the run's config.yaml (written when the head starts the run), then the stage's inputs (pairs)
    while (
        not store.config_path.is_file()
        or expected(cfg := load_config(store.config_path), store, iteration, stage) is None
    ):
        if time.monotonic() > end:
            log.error("iter-%03d/%s: inputs not complete after %.0f s", iteration, stage, wait_s)
            return 1
        time.sleep(2)
    cmd = accelerate_command(cfg, store.run_dir, iteration, stage, machine_rank=machine_rank)
    if store.manifest(iteration, stage) is not None:
        log.info("iter-%03d/%s is complete: nothing to do", iteration, stage)
        return 0
    log.info("machine rank %d: launching %s", machine_rank, " ".join(cmd))
    # its own session, so that nothing accelerate started outlives this command
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        return proc.wait()
    finally:
        kill_group(proc.pid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m selftrain.training.node", description=__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("iteration", type=int)
    parser.add_argument(
        "--machine-rank", type=int, required=True, help="this node's rank (1..num_machines-1)"
    )
    parser.add_argument("--stage", default="train", help="a stage kind that trains (default train)")
    parser.add_argument(
        "--wait", type=float, default=24 * 3600, help="seconds to wait for the stage's inputs (default a day)"
    )
    args = parser.parse_args(argv)
    setup_logging()
    return run_node(RunStore(args.run_dir), args.iteration, args.stage, args.machine_rank, args.wait)


if __name__ == "__main__":
    sys.exit(main())
