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


def _flow_run(api: str, run_id: str) -> dict:
    with urllib.request.urlopen(f"{api}/flow_runs/{run_id}", timeout=10) as r:
        return json.loads(r.read())


def _wait_state(api: str, run_id: str, states: set[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _flow_run(api, run_id)["state_type"]
        if state in states:
            return state
        time.sleep(1)
    raise TimeoutError(f"flow run {run_id} still {state} after {timeout}s (wanted {states})")


def test_killed_worker_run_turns_crashed_and_retry_resumes_it(tmp_path, tiny_model):
    """The serving process SIGKILLed mid-run: heartbeats stop, flows.deploy's automation marks the run CRASHED,
    `prefect flow-run retry` is accepted and, served again, resumes from the finished stages."""
    import re

    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path / "prefect" / "storage"),
    }
    prefect = str(Path(sys.executable).with_name("prefect"))
    procs: list[subprocess.Popen] = []

    def start(cmd: list[str], **kw) -> subprocess.Popen:
        p = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, **kw
        )
        procs.append(p)
        return p

    serve_cmd = [sys.executable, "-m", "flows.deploy", "--name", "t", "--heartbeat-seconds", "30"]
    try:
        start([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)])
        _wait_healthy(api, 120)
        serve = start(serve_cmd, cwd=ROOT)
        recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_model))
        assert cli("init", str(recipe)).returncode == 0
        store = RunStore(load_config(recipe).run_dir())
        run_id = None
        deadline = time.monotonic() + 90
        while run_id is None and time.monotonic() < deadline:  # once `serve` has registered the deployment
            proc = subprocess.run(
                [prefect, "deployment", "run", "self-training-iteration/t", "--param"]
                + [f"run={store.run_dir.resolve()}", "--param", "iteration=0"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            found = re.search(r"UUID:\s*([0-9a-f-]{36})", proc.stdout)
            run_id = found.group(1) if found else None
            time.sleep(0 if run_id else 2)
        assert run_id, proc.stdout + proc.stderr
        while store.manifest(0, "questions") is None:  # the run is under way: kill its worker
            assert time.monotonic() < deadline + 120, _flow_run(api, run_id)["state_type"]
            time.sleep(0.2)
        questions = {p.name: p.read_bytes() for p in store.stage_dir(0, "questions").glob("part-*")}
        os.killpg(serve.pid, 9)
        serve.wait()
        assert _flow_run(api, run_id)["state_type"] == "RUNNING"
        assert _wait_state(api, run_id, {"CRASHED", "COMPLETED", "FAILED"}, 240) == "CRASHED"

        start(serve_cmd, cwd=ROOT)  # a worker again
        retry = subprocess.run(
            [prefect, "flow-run", "retry", run_id], env=env, capture_output=True, text=True, timeout=120
        )
        assert retry.returncode == 0, retry.stdout + retry.stderr
        assert _wait_state(api, run_id, {"COMPLETED", "FAILED", "CRASHED"}, 400) == "COMPLETED"
        for stage in ("questions", "sample", "score", "pairs", "train", "evaluate"):
            assert store.manifest(0, stage) is not None, stage
        assert {p.name: p.read_bytes() for p in store.stage_dir(0, "questions").glob("part-*")} == questions
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait()
