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
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from selftrain.config import Config
from selftrain.logs import setup_logging
from selftrain.plan import expected
from selftrain.procs import kill_group
from selftrain.recipes import load_config
from selftrain.store import RunStore
from selftrain.training.launch import accelerate_command, check_launch_config

log = logging.getLogger(__name__)


def machines(cfg: Config) -> int:
    """How many machines the run's training launch spans (1 without an accelerate config)."""
    if not cfg.training.accelerate_config:
        return 1
    return int(check_launch_config(cfg).settings.get("num_machines", 1))


def head_file(store: RunStore, iteration: int, stage: str) -> Path:
    """Where the head of a multi-node stage whose ranks are flow runs publishes its address (outside the stage
    folder, which rank 0 may move aside when it prepares it)."""
    return store.run_dir / ".rendezvous" / f"iter-{iteration:03d}-{stage}"


def publish_head(store: RunStore, iteration: int, stage: str) -> str:
    """This machine's address, for the other ranks (SELFTRAIN_NODE_ADDR, else what its host name resolves
    to), written where `wait_for_head` reads it; also the head's own main_process_ip."""
    addr = os.environ.get("SELFTRAIN_NODE_ADDR") or socket.gethostbyname(socket.gethostname())
    path = head_file(store, iteration, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(addr)
    tmp.replace(path)
    return addr


def wait_for_head(store: RunStore, iteration: int, stage: str, wait_s: float) -> str:
    end = time.monotonic() + wait_s
    path = head_file(store, iteration, stage)
    while not path.is_file():
        if time.monotonic() > end:
            raise TimeoutError(f"{path}: the head published no address in {wait_s:.0f} s")
        time.sleep(1)
    return path.read_text().strip()


def run_node(
    store: RunStore,
    iteration: int,
    stage: str,
    machine_rank: int,
    wait_s: float,
    main_process_ip: str | None = None,
) -> int:
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
    cmd = accelerate_command(cfg, store.run_dir, iteration, stage, machine_rank, main_process_ip)
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
