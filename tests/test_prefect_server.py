"""A real Prefect server, the flows served as deployments, and one iteration started with
`prefect deployment run` — the path a team uses to dispatch stages to GPU workers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from selftrain.config import load_config
from selftrain.store import RunStore

from .conftest import ROOT, cli, tiny_recipe, write_recipe

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"Prefect server at {url} not healthy after {timeout}s")


def _read_logs(api: str) -> list[dict]:
    request = urllib.request.Request(
        f"{api}/logs/filter",
        data=json.dumps({"limit": 200, "sort": "TIMESTAMP_ASC"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def test_deployment_run_executes_an_iteration(tmp_path, tiny_model):
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path / "prefect" / "storage"),
    }
    env.pop("PREFECT_LOGGING_EXTRA_LOGGERS", None)  # as on a worker set up without selftrain's defaults
    prefect = str(Path(sys.executable).with_name("prefect"))
    server = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    serve = None
    try:
        _wait_healthy(api, 120)
        serve = subprocess.Popen(
            [sys.executable, "-m", "flows.deploy", "--name", "t"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_model))
        init = cli("init", str(recipe))  # README's deployment steps: the run folder first
        assert init.returncode == 0, init.stderr[-2000:]
        store = RunStore(load_config(recipe).run_dir())
        run_dir = str(store.run_dir.resolve())
        deadline = time.monotonic() + 60
        while True:  # the deployment exists once `serve` has registered it
            proc = subprocess.run(
                [
                    prefect,
                    "deployment",
                    "run",
                    "self-training-iteration/t",
                    "--param",
                    f"run={run_dir}",
                    "--param",
                    "iteration=0",
                    "--watch",
                    "--watch-timeout",
                    "300",
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=400,
            )
            if (
                proc.returncode == 0
                or time.monotonic() > deadline
                or "not found" not in proc.stdout + proc.stderr
            ):
                break
            time.sleep(2)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        assert "Completed" in proc.stdout, proc.stdout[-2000:]
        for stage in ("questions", "sample", "score", "pairs", "train", "evaluate"):
            assert store.manifest(0, stage) is not None, stage
        # the served run's process had no PREFECT_LOGGING_EXTRA_LOGGERS: selftrain's lines still reach the run
        messages = [log["message"] for log in _read_logs(api) if log["name"].startswith("selftrain")]
        assert sum("adapter saved" in m for m in messages) == 1, messages[-20:]
    finally:
        for p in (serve, server):
            if p is not None:
                os.killpg(p.pid, 9)
                p.wait()
