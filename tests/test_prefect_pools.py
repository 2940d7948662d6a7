"""Stages placed on work pools: a real Prefect server, pools gpu and cpu, three process workers (two on gpu,
each its own host name, one on cpu); one iteration of the tiny recipe dispatched stage by stage."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from selftrain.config import load_config
from selftrain.store import RunStore

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
