"""Distributed training: the train stage under `accelerate launch` (DeepSpeed ZeRO, several GPUs or nodes).

    accelerate launch --config_file configs/accelerate/zero2-4gpu.yaml -m selftrain.training.launch RUN_DIR I [STAGE]

Every rank trains; rank 0 alone prepares the stage folder, saves the adapter and writes the manifest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

from selftrain.config import Config, ConfigError
from selftrain.logs import setup_logging
from selftrain.procs import die_with_parent
from selftrain.recipes import load_config
from selftrain.spec import kind
from selftrain.stages import open_stage
from selftrain.stages.train import finish_train
from selftrain.store import RunStore


class LaunchConfig(NamedTuple):
    settings: dict  # the accelerate YAML as read
    deepspeed_json: Path | None  # its deepspeed_config_file, resolved against the YAML's folder


def check_launch_config(cfg: Config) -> LaunchConfig:
    """The accelerate config, read and checked against the recipe before anything runs (a mismatch would
    otherwise surface minutes later as a DeepSpeed traceback from every rank)."""
    import yaml

    config_file = cfg.training.accelerate_config
    if config_file is None:
        raise ConfigError("training.accelerate_config is not set")
    if not Path(config_file).is_file():
        raise ConfigError(f"training.accelerate_config: no such file {config_file}")
    try:
        launch = yaml.safe_load(Path(config_file).read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{config_file}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(launch, dict):
        raise ConfigError(f"{config_file}: expected a mapping of accelerate settings")
    ds = launch.get("deepspeed_config") or {}
    stage, gathers, precision = ds.get("zero_stage", 0), ds.get("zero3_save_16bit_model", False), None
    json_path = None
    if ds.get("deepspeed_config_file"):
        json_path, ds_json = _read_deepspeed_json(config_file, ds["deepspeed_config_file"])
        zero = ds_json.get("zero_optimization") or {}
        stage = zero.get("stage", 0)
        gathers = zero.get("stage3_gather_16bit_weights_on_model_save", False)
        if (ds_json.get("bf16") or {}).get("enabled") is True:
            precision = "bf16"
    precision = precision or str(launch.get("mixed_precision", "no"))
    if int(stage) == 3 and gathers is not True:
        # without it DeepSpeed cannot gather the sharded adapter on save and the adapter is lost
        raise ConfigError(
            f"{config_file}: ZeRO-3 needs zero3_save_16bit_model: true "
            "(stage3_gather_16bit_weights_on_model_save in a DeepSpeed JSON) to save the adapter"
        )
    if precision == "bf16" and not cfg.training.bf16:
        raise ConfigError(
            f"{config_file} sets bf16 mixed precision but training.bf16 is false; "
            "set training.bf16=true or use a config without bf16"
        )
    if precision == "fp16":
        raise ConfigError(f"{config_file}: mixed_precision fp16 is not supported (use bf16 or 'no')")
    _check_machines(config_file, launch)
    return LaunchConfig(launch, json_path)


def _check_machines(config_file: str, launch: dict) -> None:
    """Multi-node fields: every node's rendezvous needs the same main address and port and its own rank; a
    mistake here otherwise shows as every node waiting at the rendezvous until a timeout."""

    try:
        machines = int(launch.get("num_machines", 1))
        rank = int(launch.get("machine_rank", 0))
        processes = int(launch.get("num_processes", 1))
        port = launch.get("main_process_port")
        port = None if port is None else int(port)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"{config_file}: num_machines, machine_rank, num_processes, main_process_port: {e}"
        ) from None
    if machines < 1 or not 0 <= rank < machines:
        raise ConfigError(
            f"{config_file}: machine_rank {rank} is not in 0..{machines - 1} (num_machines {machines})"
        )
    if machines == 1:
        return
    if not launch.get("main_process_ip"):
        raise ConfigError(f"{config_file}: num_machines {machines} needs main_process_ip (rank 0's address)")
    if port is None or not 0 < port < 65536:
        raise ConfigError(
            f"{config_file}: num_machines {machines} needs main_process_port (a fixed port, 1-65535)"
        )
    ds = launch.get("deepspeed_config") or {}
    if launch.get("distributed_type") == "DEEPSPEED" and ds.get("deepspeed_multinode_launcher") != "standard":
        # any other launcher (pdsh by default) would log into the other nodes from rank 0 itself, and every
        # node's rank is started by selftrain (selftrain.training.node)
        raise ConfigError(
            f"{config_file}: DeepSpeed on {machines} machines needs deepspeed_config.deepspeed_multinode_launcher:"
            " standard (each node's ranks are started on that node: python -m selftrain.training.node)"
        )
    if processes % machines:
        raise ConfigError(
            f"{config_file}: num_processes {processes} (the total over all machines) is not a multiple of "
            f"num_machines {machines}"
        )


def _read_deepspeed_json(config_file: str, name: str) -> tuple[Path, dict]:
    import json

    path = Path(name)
    if not path.is_absolute():
        path = Path(config_file).resolve().parent / path
    try:
        return path, json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{config_file}: deepspeed_config_file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None


def accelerate_command(
    cfg: Config,
    run_dir: Path,
    iteration: int,
    stage: str = "train",
    machine_rank: int = 0,
    main_process_ip: str | None = None,
) -> list[str]:
    """The `accelerate launch` command of one machine's ranks; `machine_rank`: which machine this is when the
    config has several (every node reads the one config.yaml of the run, so the rank comes from here);
    `main_process_ip` (or $SELFTRAIN_MAIN_PROCESS_IP): the head's address when it is known only at run time
    (ranks started by flow runs on a pool), over the config's."""
    import os

    launch = check_launch_config(cfg)
    config_file = str(cfg.training.accelerate_config)
    extra: list[str] = []
    machines = int(launch.settings.get("num_machines", 1))
    if machines == 1:
        # one machine: any free port, so back-to-back or concurrent runs never collide on a fixed one
        extra += ["--main_process_port", str(_free_port())]
    if not 0 <= machine_rank < machines:
        raise ConfigError(f"{config_file}: machine rank {machine_rank} is not in 0..{machines - 1}")
    if machines > 1:
        extra += ["--machine_rank", str(machine_rank)]
        main_process_ip = main_process_ip or os.environ.get("SELFTRAIN_MAIN_PROCESS_IP")
        if main_process_ip:
            extra += ["--main_process_ip", main_process_ip]
    if launch.deepspeed_json is not None:  # resolved, so the run does not depend on the working directory
        extra += ["--deepspeed_config_file", str(launch.deepspeed_json)]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        config_file,
        *extra,
        "-m",
        "selftrain.training.launch",
        str(run_dir),
        str(iteration),
        stage,
    ]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    import importlib

    from accelerate import PartialState

    parser = argparse.ArgumentParser(prog="python -m selftrain.training.launch")
    parser.add_argument("run_dir")
    parser.add_argument("iteration", type=int)
    parser.add_argument("stage", nargs="?", default="train", help="a stage kind that trains (default train)")
    args = parser.parse_args(argv)
    setup_logging()
    # torchrun starts each rank in a session of its own: without this a rank outlives a SIGKILLed launcher
    # (a node's job killed, a flow run's process lost) and waits in its rendezvous or a collective for ever
    die_with_parent()
    import torch

    # cpu=True on a machine without CUDA: otherwise PartialState sees no distributed setup before the
    # Trainer makes one, and every rank would think it is the main process
    state = PartialState(cpu=not torch.cuda.is_available())
    store = RunStore(args.run_dir)
    cfg = load_config(store.config_path)
    # rank 0 alone prepares (or resumes) the folder, before the others look, and writes the manifest
    with open_stage(
        cfg,
        store,
        args.iteration,
        args.stage,
        writes=state.is_main_process,
        setup_first=state.main_process_first,
    ) as (inputs, writer):
        out_dir = store.stage_dir(args.iteration, args.stage)
        # a trainer stage's module has train_or_keep(cfg, inputs, out_dir, main_process) (train, sft)
        trainer = importlib.import_module(kind(args.stage).module)
        stats = trainer.train_or_keep(cfg, inputs, out_dir, main_process=state.is_main_process)
        state.wait_for_everyone()
        if writer is not None:
            finish_train(writer, inputs, {**stats, "processes": state.num_processes})
    return 0


if __name__ == "__main__":
    sys.exit(main())
