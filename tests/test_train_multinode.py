"""Two "machines" over loopback: the train stage as a 2-node DeepSpeed ZeRO-2 job on this CPU (gloo), the head
node's rank started by `selftrain run`, the other's by `python -m selftrain.training.node --machine-rank 1`,
one process per node. It must give the adapter of the one-machine two-process run, and resume from its last
checkpoint after rank 1 is SIGKILLed mid-training when both nodes are relaunched."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from selftrain.pipeline import execute_stage
from selftrain.recipes import load_config
from selftrain.runner import init_run
from selftrain.store import RunStore

from .conftest import ROOT
from .test_prefect_pools import DISPATCH, _flow_runs, deploy_pools, worker
from .test_prefect_server import prefect_server  # noqa: F401  (the fixture)
from .test_train_distributed import (
    NO_DEEPSPEED,
    check_policy,
    launch_recipe,
    max_adapter_diff,
)

pytestmark = [pytest.mark.slow, NO_DEEPSPEED, pytest.mark.timeout(1800)]

UPSTREAM = ("questions", "sample", "score", "pairs")
TOLERANCE = (
    1e-6  # same global ranks, data order and gloo all-reduce as on one machine: float rounding at most
)


def two_node_config(path: Path, port: int, main_process_ip: str = "127.0.0.1") -> Path:
    """zero2-cpu-2proc.yaml as 2 machines × 1 process meeting at main_process_ip:port."""
    launch = yaml.safe_load((ROOT / "configs" / "accelerate" / "zero2-cpu-2proc.yaml").read_text())
    launch.update(num_machines=2, num_processes=2, machine_rank=0, main_process_ip=main_process_ip)
    launch.update(main_process_port=port)
    launch["deepspeed_config"]["deepspeed_multinode_launcher"] = "standard"
    path.write_text(yaml.safe_dump(launch))
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(store: RunStore, env: dict | None = None, timeout: float = 600) -> tuple[str, int]:
    """The train stage on two "machines": the head's ranks through the pipeline (`execute_stage`, as `selftrain
    run` does, in a thread here), machine rank 1's through `python -m selftrain.training.node`. The head's
    outcome ("ok" or the error) and the node command's exit code."""
    full = {**os.environ, **(env or {})}
    node = subprocess.Popen(
        [sys.executable, "-m", "selftrain.training.node", str(store.run_dir), "0", "--machine-rank", "1"],
        env=full,
        cwd=ROOT,
        start_new_session=True,
    )
    head: list[str] = []

    def run_head() -> None:
        try:
            with patched_environ(env or {}):
                execute_stage(load_config(store.config_path), store, 0, "train")
            head.append("ok")
        except Exception as e:  # noqa: BLE001 - reported to the test
            head.append(f"{type(e).__name__}: {e}")

    thread = threading.Thread(target=run_head)
    thread.start()
    try:
        node.wait(timeout=timeout)
        thread.join(timeout=timeout)
        assert head, "the head's training did not end"
        return head[0], node.returncode
    finally:
        if node.poll() is None:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait()


@contextlib.contextmanager
def patched_environ(values: dict) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def one_machine(tmp_path: Path, model: Path) -> tuple[RunStore, dict]:
    """The reference: the upstream stages in this process (the tiny model's take seconds), then the train stage
    on one machine with two processes (zero2-cpu-2proc); its store and adapter."""
    one = init_run(load_config(launch_recipe(tmp_path / "one", model, "zero2-cpu-2proc.yaml")))
    cfg = load_config(one.config_path)
    for stage in UPSTREAM:
        execute_stage(cfg, one, 0, stage)
    assert execute_stage(cfg, one, 0, "train").stats["processes"] == 2
    return one, check_policy(one, model)


def two_node_run(tmp_path: Path, model: Path, name: str, one: RunStore, **launch) -> RunStore:
    """A run whose training spans two machines, its upstream stages copied from `one` (the same stages, the
    same fingerprints: only the training differs)."""
    config = two_node_config(tmp_path / f"{name}-launch.yaml", _free_port(), **launch)
    store = init_run(load_config(launch_recipe(tmp_path / name, model, str(config))))
    for stage in UPSTREAM:
        shutil.copytree(one.stage_dir(0, stage), store.stage_dir(0, stage))
    return store


def test_two_machines_over_loopback_match_one_machine_and_resume(tmp_path, tiny_model):
    t0 = time.monotonic()
    one, reference = one_machine(tmp_path, tiny_model)
    t_one = time.monotonic() - t0

    # two machines, one process each
    two = two_node_run(tmp_path, tiny_model, "two", one)
    assert two_nodes(two) == ("ok", 0)
    manifest = two.manifest(0, "train")
    assert manifest.stats["processes"] == 2 and manifest.stats["distributed_type"] == "DEEPSPEED"
    diff_two = max_adapter_diff(check_policy(two, tiny_model), reference)
    t_two = time.monotonic() - t0 - t_one

    # again, rank 1 (machine 1) SIGKILLed right after the step-2 checkpoint; then both nodes relaunched
    killed = two_node_run(tmp_path, tiny_model, "killed", one)
    head, node = two_nodes(killed, env={"SELFTRAIN_KILL_AT": "train:step:2", "SELFTRAIN_KILL_RANK": "1"})
    assert head.startswith("StageCrashed") and node != 0, (head, node)
    assert killed.manifest(0, "train") is None
    checkpoint = killed.stage_dir(0, "train") / "checkpoints" / "checkpoint-2"
    assert (checkpoint / "trainer_state.json").is_file()
    assert two_nodes(killed) == ("ok", 0)
    manifest = killed.manifest(0, "train")
    assert manifest.stats["resumed_from"] == "checkpoint-2" and manifest.stats["steps"] == 4
    diff_resumed = max_adapter_diff(check_policy(killed, tiny_model), reference)
    t_killed = time.monotonic() - t0 - t_one - t_two
    print(
        f"MULTINODE diff_two={diff_two:.3g} diff_resumed={diff_resumed:.3g} "
        f"one={t_one:.0f}s two={t_two:.0f}s killed+resumed={t_killed:.0f}s"
    )
    assert diff_two <= TOLERANCE and diff_resumed <= TOLERANCE, (diff_two, diff_resumed)


def test_ranks_started_by_flow_runs_on_the_gpu_pool(prefect_server, tmp_path, tiny_model):  # noqa: F811
    """placement.dispatch: pools with a 2-machine training: the train stage is two flow runs of the gpu pool,
    one per machine rank, taken by two process workers. Rank 0 runs wherever the pool put it and publishes its
    address in the run folder (the config's main_process_ip, 10.255.255.1, leads nowhere: the rendezvous works
    only through the published one); the adapter equals the one-machine run's."""
    api, env = prefect_server.api, prefect_server.env
    one, reference = one_machine(tmp_path, tiny_model)
    store = two_node_run(tmp_path, tiny_model, "pools", one, main_process_ip="10.255.255.1")
    config = yaml.safe_load(store.config_path.read_text())
    config["placement"] = {"dispatch": "pools"}
    store.config_path.write_text(yaml.safe_dump(config))
    deploy_pools(env, "gpu")
    for host in ("gpu-a", "gpu-b"):
        worker(prefect_server, tmp_path, "gpu", host, SELFTRAIN_NODE_ADDR="127.0.0.1")
    dispatch = subprocess.run(
        [sys.executable, "-c", DISPATCH, str(store.run_dir), "train"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert dispatch.returncode == 0, dispatch.stdout[-2000:] + dispatch.stderr[-4000:]
    manifest = store.manifest(0, "train")
    assert manifest.stats["processes"] == 2 and manifest.stats["distributed_type"] == "DEEPSPEED"
    assert max_adapter_diff(check_policy(store, tiny_model), reference) <= TOLERANCE
    runs = [r for r in _flow_runs(api) if r["parameters"].get("stage") == "train"]
    ranks = sorted(
        (r["parameters"].get("machine_rank", 0), r["work_pool_name"], r["state_type"]) for r in runs
    )
    assert ranks == [(0, "gpu", "COMPLETED"), (1, "gpu", "COMPLETED")], ranks
