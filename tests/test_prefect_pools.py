"""Stages placed on work pools: a real Prefect server, pools gpu and cpu, three process workers (two on gpu,
each its own host name, one on cpu); one iteration of the tiny recipe dispatched stage by stage."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from selftrain.pipeline import execute_stage
from selftrain.recipes import load_config
from selftrain.runner import init_run
from selftrain.store import RunStore, read_stage

from .conftest import ROOT, stage_tables, tiny_recipe, write_recipe
from .test_prefect_server import prefect_server  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow


def _flow_runs(api: str) -> list[dict]:
    request = urllib.request.Request(
        f"{api}/flow_runs/filter",
        data=json.dumps({"limit": 200}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def test_stages_run_on_their_pools(prefect_server, tmp_path, tiny_model, reference):  # noqa: F811
    api, env, prefect, start = prefect_server

    def python(*args: str, timeout: float) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )
        assert proc.returncode == 0, proc.stderr[-4000:]

    python("flows.deploy", "--stage-pools", "gpu", "cpu", timeout=300)
    worker_env = {"PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1"}
    for pool, host in (("gpu", "gpu-a"), ("gpu", "gpu-b"), ("cpu", "cpu-a")):
        cmd = [prefect, "worker", "start", "--pool", pool, "--type", "process", "--name", host]
        start(cmd, extra_env={**worker_env, "SELFTRAIN_HOST": host}, cwd=ROOT)
    recipe = tiny_recipe(tmp_path, tiny_model)
    recipe["placement"] = {"dispatch": "pools", "sample": {"runs": 2}}
    path = write_recipe(tmp_path / "r.yaml", recipe)
    python("selftrain.cli", "run", str(path), timeout=900)
    store = RunStore(load_config(path).run_dir())
    runs = [r for r in _flow_runs(api) if r["parameters"].get("stage")]
    where = {(r["parameters"]["stage"], r["work_pool_name"], r["parameters"]["join"]) for r in runs}
    assert where == {
        ("questions", "cpu", False),
        ("sample", "gpu", False),
        ("sample", "gpu", True),
        ("score", "gpu", False),
        ("pairs", "cpu", False),
        ("train", "gpu", False),
        ("evaluate", "gpu", False),
    }, where
    assert all(r["state_type"] == "COMPLETED" for r in runs)
    writers = {s.writer.split(":")[0] for s in store.manifest(0, "sample").shards}
    assert writers and writers <= {"gpu-a", "gpu-b"}, writers
    assert stage_tables(store.run_dir) == stage_tables(reference)


# the iteration flow's dispatch (tasks/common.py) of two stages, in a process that talks to the test's server
DISPATCH = """
import sys
from selftrain.recipes import load_config
from selftrain.logs import setup_logging
from selftrain.store import RunStore
from tasks.common import dispatch_stage
setup_logging()
store = RunStore(sys.argv[1])
cfg = load_config(store.config_path)
for stage in sys.argv[2:]:
    print(stage, dispatch_stage(cfg, store, 0, stage, False).rows, flush=True)
"""


def deploy_pools(env: dict, *pools: str) -> None:
    """Deployments selftrain-stage/<pool> (and the process pools) on the test's server."""
    cmd = [sys.executable, "-m", "flows.deploy", "--stage-pools", *pools]
    deploy = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stderr[-4000:]


def worker(server, log_dir: Path, pool: str, host: str, **extra: str) -> subprocess.Popen:  # noqa: ANN001
    """A process worker of `pool` as host `host` that runs one flow run at a time (one per node), polling
    every second; its output in log_dir/worker-<host>.log."""
    cmd = [server.prefect, "worker", "start", "--pool", pool, "--type", "process", "--name", host]
    env = {
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "1",
        "SELFTRAIN_HOST": host,
    }
    out = open(log_dir / f"worker-{host}.log", "w")  # noqa: SIM115
    return server.start(
        [*cmd, "--limit", "1"], extra_env={**env, **extra}, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
    )


def _wait_for(what: str, probe, timeout: float, poll: float = 0.05):  # noqa: ANN001, ANN202
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = probe()
        if found:
            return found
        time.sleep(poll)
    raise TimeoutError(f"no {what} after {timeout}s")


def _leases(ldir: Path) -> dict[tuple[int, int], dict]:
    """(shard, generation) -> the claim's record, for every claim made on the stage."""
    out = {}
    for p in ldir.glob("part-*.*"):
        stem, _, gen = p.name.partition(".")
        if gen.isdigit():
            with contextlib.suppress(FileNotFoundError, ValueError):
                out[int(stem.split("-")[1]), int(gen)] = json.loads(p.read_text())
    return out


def test_gpu_worker_killed_mid_sample(prefect_server, tmp_path, tiny_model):  # noqa: F811
    """Pools gpu (workers gpu-a, gpu-b, one flow run each) and cpu (cpu-a): sample is dispatched as two flow
    runs. gpu-a claims a shard and is held there (SELFTRAIN_PAUSE_AT: a long generation, so the kill lands at a
    known moment: its lease live, the shard unpublished); gpu-b joins, and once it has published a shard gpu-a's
    worker and flow-run process are SIGKILLed. gpu-b takes the shard over after the lease expires, the stage
    completes, the table equals a single-process run's and every shard was published once."""
    api, env = prefect_server.api, prefect_server.env
    ttl = 4.0
    data = {"questions_per_iteration": 24, "shard_size": 2}  # 12 shards
    recipes = {}
    for name in ("single", "pools"):
        recipe = tiny_recipe(
            tmp_path / name, tiny_model, store={"root": str(tmp_path / name), "lease_seconds": ttl}
        )
        recipe["data"] = {**recipe["data"], **data}
        recipe["placement"] = {"dispatch": "pools", "sample": {"runs": 2}}
        recipes[name] = write_recipe(tmp_path / f"{name}.yaml", recipe)
    deploy_pools(env, "gpu", "cpu")

    worker(prefect_server, tmp_path, "cpu", "cpu-a")
    gpu_a = worker(prefect_server, tmp_path, "gpu", "gpu-a", SELFTRAIN_PAUSE_AT="sample:claim:*")
    store = init_run(load_config(recipes["pools"]))
    log = open(tmp_path / "dispatch.log", "w")  # noqa: SIM115
    dispatcher = subprocess.Popen(
        [sys.executable, "-c", DISPATCH, str(store.run_dir), "questions", "sample"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # the reference, in this process, while the flow runs start
        cfg = load_config(recipes["single"])
        single = init_run(cfg)
        for stage in ("questions", "sample"):
            execute_stage(cfg, single, 0, stage)
        reference = read_stage(single.stage_dir(0, "sample")).to_pylist()

        sample = store.stage_dir(0, "sample")
        ldir = sample / ".leases"

        def held_by_a() -> tuple[int, int] | None:
            for (index, _), rec in _leases(ldir).items():
                if rec["host"] == "gpu-a" and not (sample / f"part-{index:05d}.parquet").exists():
                    return index, rec["pid"]
            return None

        index, pid = _wait_for("lease held by gpu-a", held_by_a, 300)
        worker(prefect_server, tmp_path, "gpu", "gpu-b")  # a second node joins the stage...
        _wait_for("shard published by gpu-b", lambda: list(ldir.glob("part-*.done")), 300)
        assert not (sample / f"part-{index:05d}.parquet").exists()
        assert time.time() - (ldir / f"part-{index:05d}.1").stat().st_mtime < ttl  # gpu-a's lease is live
        # ...and the first dies: its worker and the flow-run process that holds the lease
        os.killpg(gpu_a.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        # the claims, gathered while the stage runs: its manifest's writer removes `.leases/` once it is written
        claims: dict[tuple[int, int], dict] = {}
        end = time.monotonic() + 150
        while dispatcher.poll() is None and time.monotonic() < end:
            claims.update(_leases(ldir))
            time.sleep(0.05)
        assert dispatcher.wait(timeout=1) == 0, (tmp_path / "dispatch.log").read_text()[-4000:]
    finally:
        if dispatcher.poll() is None:
            dispatcher.kill()
            dispatcher.wait()
    manifest = store.manifest(0, "sample")
    assert manifest is not None and len(manifest.shards) == 12
    assert read_stage(sample).to_pylist() == reference
    # gpu-a's shard was taken over (generation 2) by gpu-b, once the lease had expired
    takeover = claims[index, 2]
    assert takeover["host"] == "gpu-b" and takeover["at"] - killed_at > 0.75 * ttl - 0.5, takeover
    assert [key for key in claims if key[1] > 1] == [(index, 2)], sorted(claims)
    # every shard published once, none by gpu-a (the manifest names each one's writer), and no lease is left
    assert {s.writer.split(":")[0] for s in manifest.shards} == {"gpu-b"}, manifest.shards
    assert not ldir.exists()
    assert not list(sample.glob(".part-*")) and not list(sample.glob("*tmp*"))
    runs = [r for r in _flow_runs(api) if r["parameters"].get("stage") == "sample"]
    # gpu-b's run completed; gpu-a's never ends by itself (no worker left to report it)
    assert sorted(r["state_type"] for r in runs) == ["COMPLETED", "RUNNING"], runs
    questions = [r for r in _flow_runs(api) if r["parameters"].get("stage") == "questions"]
    assert [(r["work_pool_name"], r["state_type"]) for r in questions] == [("cpu", "COMPLETED")]
