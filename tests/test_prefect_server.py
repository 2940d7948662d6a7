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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from selftrain.recipes import load_config
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


class Server(NamedTuple):
    api: str
    env: dict  # for every process that talks to this server
    prefect: str  # the prefect CLI of this venv
    start: Callable[..., subprocess.Popen]  # a process in its own session, killed at teardown


@pytest.fixture
def prefect_server(tmp_path) -> Iterator[Server]:
    """A real Prefect server on a free port with its own home and result storage, healthy; every process
    started through it (the server included) is SIGKILLed with its whole process group at teardown."""
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

    def start(cmd: list[str], extra_env: dict | None = None, **kw) -> subprocess.Popen:
        kw = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, **kw}
        p = subprocess.Popen(cmd, env={**env, **(extra_env or {})}, start_new_session=True, **kw)
        procs.append(p)
        return p

    try:
        start([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)])
        _wait_healthy(api, 120)
        yield Server(api, env, prefect, start)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait()


def _run_deployment(
    server: Server, run_dir: Path, *options: str, timeout: float
) -> subprocess.CompletedProcess:
    """`prefect deployment run` of iteration 0 of `run_dir`, asked again while the deployment is "not found"
    (it exists once `flows.deploy` has registered it)."""
    deadline = time.monotonic() + 90
    while True:
        proc = subprocess.run(
            [server.prefect, "deployment", "run", "self-training-iteration/t", "--param", f"run={run_dir}"]
            + ["--param", "iteration=0", *options],
            env=server.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if (
            proc.returncode == 0
            or time.monotonic() > deadline
            or "not found" not in proc.stdout + proc.stderr
        ):
            return proc
        time.sleep(2)


def test_deployment_run_executes_an_iteration(prefect_server, tmp_path, tiny_model):
    # as on a worker set up without selftrain's defaults (the server has started already: only workers see it)
    prefect_server.env.pop("PREFECT_LOGGING_EXTRA_LOGGERS", None)
    prefect_server.start([sys.executable, "-m", "flows.deploy", "--name", "t"], cwd=ROOT)
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_model))
    init = cli("init", str(recipe))  # README's deployment steps: the run folder first
    assert init.returncode == 0, init.stderr[-2000:]
    store = RunStore(load_config(recipe).run_dir())
    proc = _run_deployment(
        prefect_server, store.run_dir.resolve(), "--watch", "--watch-timeout", "300", timeout=400
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "Completed" in proc.stdout, proc.stdout[-2000:]
    for stage in ("questions", "sample", "score", "pairs", "train", "evaluate"):
        assert store.manifest(0, stage) is not None, stage
    # the served run's process had no PREFECT_LOGGING_EXTRA_LOGGERS: selftrain's lines still reach the run
    messages = [
        log["message"] for log in _read_logs(prefect_server.api) if log["name"].startswith("selftrain")
    ]
    assert sum("adapter saved" in m for m in messages) == 1, messages[-20:]


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


def test_killed_worker_run_turns_crashed_and_retry_resumes_it(prefect_server, tmp_path, tiny_model):
    """The serving process SIGKILLed mid-run: heartbeats stop, flows.deploy's automation marks the run CRASHED,
    `prefect flow-run retry` is accepted and, served again, resumes from the finished stages."""
    import re

    api, env, prefect, start = prefect_server
    serve_cmd = [sys.executable, "-m", "flows.deploy", "--name", "t", "--heartbeat-seconds", "30"]
    serve = start(serve_cmd, cwd=ROOT)
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_model))
    assert cli("init", str(recipe)).returncode == 0
    store = RunStore(load_config(recipe).run_dir())
    proc = _run_deployment(prefect_server, store.run_dir.resolve(), timeout=60)
    found = re.search(r"UUID:\s*([0-9a-f-]{36})", proc.stdout)
    run_id = found.group(1) if found else None
    assert run_id, proc.stdout + proc.stderr
    deadline = time.monotonic() + 120
    while store.manifest(0, "questions") is None:  # the run is under way: kill its worker
        assert time.monotonic() < deadline, _flow_run(api, run_id)["state_type"]
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
