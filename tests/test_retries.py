"""Stage retries from the config (run.retries, run.retry_delay_seconds; default none): in the plain runner and
as Prefect task options. A crash is retried; a user error, which would fail the same way again, is not."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import yaml

from selftrain.config import Config
from selftrain.plan import StageCrashed
from selftrain.store import StoreError


def _run_folder(tmp_path, retries: int):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = Config.model_validate({"run": {"retries": retries, "retry_delay_seconds": 0}})
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return run_dir


def _flaky(monkeypatch, errors: dict[str, list[BaseException]]) -> list[str]:
    """execute_stage that raises the queued errors of a stage first, then succeeds; returns the call log."""
    from selftrain import runner

    calls: list[str] = []

    def fake(cfg, store, iteration, stage, rebuild_stale=False):
        calls.append(stage)
        if errors.get(stage):
            raise errors[stage].pop(0)

    monkeypatch.setattr(runner, "execute_stage", fake)
    return calls


def test_default_is_no_retry(tmp_path, monkeypatch):
    from selftrain.runner import run_iteration

    assert Config().run.retries == 0
    calls = _flaky(monkeypatch, {"sample": [RuntimeError("engine died")]})
    with pytest.raises(RuntimeError, match="engine died"):
        run_iteration(str(_run_folder(tmp_path, 0)), 0)
    assert calls == ["questions", "sample"]


def test_crash_is_retried_and_said(tmp_path, monkeypatch, caplog):
    from selftrain.runner import run_iteration

    calls = _flaky(monkeypatch, {"sample": [RuntimeError("engine died")], "train": [StageCrashed("exit 1")]})
    with caplog.at_level(logging.WARNING, logger="selftrain.runner"):
        run_iteration(str(_run_folder(tmp_path, 1)), 0)
    assert calls == ["questions", "sample", "sample", "score", "pairs", "train", "train", "evaluate"]
    said = [r.getMessage() for r in caplog.records if "retry 1 of 1" in r.getMessage()]
    assert len(said) == 2 and "iter-000/sample failed (RuntimeError: engine died)" in said[0]


def test_user_error_is_not_retried(tmp_path, monkeypatch):
    from selftrain.runner import run_iteration

    calls = _flaky(monkeypatch, {"score": [StoreError("corrupt shard x")]})
    with pytest.raises(StoreError):
        run_iteration(str(_run_folder(tmp_path, 3)), 0)
    assert calls.count("score") == 1


def test_prefect_task_options_from_config():
    from tasks.common import retry_unless_user_error, task_options
    from tasks.stages import STAGE_TASKS

    sample = STAGE_TASKS["sample"]

    cfg = Config.model_validate({"run": {"retries": 2, "retry_delay_seconds": 5}})
    task = sample.with_options(**task_options(cfg))
    assert task.retries == 2 and task.retry_delay_seconds == 5 and task.name == "sample"
    assert sample.retries == 0  # the decorator's own default is untouched
    state = lambda e: SimpleNamespace(data=e)  # noqa: E731 - what Prefect passes: a Failed state
    assert retry_unless_user_error(task, None, state(RuntimeError("EngineDeadError")))
    assert retry_unless_user_error(task, None, state(StageCrashed("exit -9")))
    assert not retry_unless_user_error(task, None, state(StoreError("iter-000/sample is stale")))


def test_zombie_automation_crashes_silent_runs_only():
    """The automation flows.deploy creates: a flow run whose heartbeats stop for 3 periods without a final
    state is set CRASHED (the end-to-end check, with a SIGKILLed worker, is in test_prefect_server)."""
    from flows.zombies import zombie_automation

    auto = zombie_automation(30)
    trigger = auto.trigger
    assert trigger.posture == "Proactive" and trigger.within.total_seconds() == 90
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert {"prefect.flow-run.Completed", "prefect.flow-run.Crashed"} <= trigger.expect
    assert trigger.for_each == {"prefect.resource.id"}
    assert [a.state for a in auto.actions] == ["CRASHED"]
