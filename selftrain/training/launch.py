"""Distributed training: the train stage under `accelerate launch` (DeepSpeed ZeRO, several GPUs or nodes).

    accelerate launch --config_file configs/accelerate/zero2-4gpu.yaml -m selftrain.training.launch RUN_DIR I

Every rank trains; rank 0 alone prepares the stage folder, saves the adapter and writes the manifest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from selftrain.config import Config


def accelerate_command(cfg: Config, run_dir: Path, iteration: int) -> list[str]:
    config_file = cfg.training.accelerate_config
    if config_file is None:
        raise ValueError("training.accelerate_config is not set")
    if not Path(config_file).is_file():
        raise FileNotFoundError(f"training.accelerate_config: no such file {config_file}")
    import yaml

    launch = yaml.safe_load(Path(config_file).read_text()) or {}
    port: list[str] = []
    if int(launch.get("num_machines", 1)) == 1:
        # one machine: any free port, so back-to-back or concurrent runs never collide on a fixed one
        port = ["--main_process_port", str(_free_port())]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        config_file,
        *port,
        "-m",
        "selftrain.training.launch",
        str(run_dir),
        str(iteration),
    ]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    from accelerate import PartialState

    from selftrain.config import load_config
    from selftrain.logs import setup_logging
    from selftrain.pipeline import expected
    from selftrain.stages.common import StageInputs
    from selftrain.stages.train import finish_train, prepare_train
    from selftrain.store import RunStore, StageWriter, StoreError
    from selftrain.training.dpo import train_dpo

    parser = argparse.ArgumentParser(prog="python -m selftrain.training.launch")
    parser.add_argument("run_dir")
    parser.add_argument("iteration", type=int)
    args = parser.parse_args(argv)
    setup_logging()
    state = PartialState()
    store = RunStore(args.run_dir)
    cfg = load_config(store.config_path)
    exp = expected(cfg, store, args.iteration, "train")
    if exp is None:
        raise StoreError(f"iter-{args.iteration:03d}/train: an upstream stage is not complete")
    inputs = StageInputs(store, args.iteration, "train", *exp)
    out_dir = store.stage_dir(args.iteration, "train")
    writer = None
    with state.main_process_first():  # rank 0 sets the folder up (or resumes it) before the others look
        if state.is_main_process:
            writer = StageWriter(out_dir, inputs.fingerprint)
    files, init = prepare_train(cfg, inputs)
    try:
        stats = train_dpo(cfg, files, out_dir, init)
    except BaseException as e:
        if writer is not None:
            writer.record_failure(e)
        raise
    state.wait_for_everyone()
    if writer is not None:
        finish_train(writer, inputs, {**stats, "trained": True, "processes": state.num_processes})
    return 0


if __name__ == "__main__":
    sys.exit(main())
