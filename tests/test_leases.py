"""Shard leases: several worker processes (stand-in hosts) share one data-parallel stage; a worker killed
mid-shard has its shard taken over after its lease expires; a worker whose lease was taken never publishes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from selftrain.leases import LeaseLost, Leases, lease_status
from selftrain.runlock import link_new
from selftrain.schemas import QUESTIONS
from selftrain.store import StageWriter, read_stage, write_shard
from tests.conftest import ROOT, questions_only, tiny_recipe, write_recipe


def _as_host(leases: Leases, host: str, pid: int) -> Leases:
    leases.host, leases.pid = host, pid
    return leases


def _row(i: int) -> dict:
    return {"question_id": f"q{i}", "source": "s", "task": "arithmetic", "question": "1+1", "reference": "2"}


def test_claims_are_exclusive_and_expired_ones_are_taken_over(tmp_path):
    a = _as_host(Leases(tmp_path, 3, ttl_s=0.5), "host-a", 1)
    b = _as_host(Leases(tmp_path, 3, ttl_s=0.5), "host-b", 2)
    assert a.try_claim("part-00000")
    a._stop.set()  # host a stops renewing: as a frozen or dead machine would
    assert not b.try_claim("part-00000")  # live: nobody else gets it
    time.sleep(0.7)
    assert b.try_claim("part-00000")  # expired: taken over, as generation 2
    assert (tmp_path / ".leases" / "part-00000.2").exists()
    total, done, claims = lease_status(tmp_path, ttl_s=0.5)
    assert (total, done) == (3, 0) and [(c.index, c.host, c.live) for c in claims] == [(0, "host-b", True)]
    b.release_all()


def test_a_worker_whose_lease_was_taken_does_not_publish(tmp_path):
    writer = StageWriter(tmp_path / "stage", "fp")
    a = _as_host(Leases(writer.dir, 1, ttl_s=0.4), "host-a", 1)
    b = _as_host(Leases(writer.dir, 1, ttl_s=0.4), "host-b", 2)
    assert a.try_claim("part-00000")
    a._stop.set()
    time.sleep(0.6)
    with pytest.raises(LeaseLost, match="expired"):
        a.check("part-00000")  # a's heartbeat is late and its lease expired: it does not publish
    assert b.try_claim("part-00000")
    a.renew()  # a's heartbeat wakes up (SIGCONT, end of a GC pause) and finds generation 2
    with pytest.raises(LeaseLost, match="lost|taken over"):
        a.check("part-00000")
    rows = [_row(0)]
    assert write_shard(writer.dir, 0, rows, QUESTIONS, leases=a) is None
    assert not (writer.dir / "part-00000.parquet").exists()
    assert not list(writer.dir.glob(".part-*tmp*"))  # its temp file is gone too
    info = write_shard(writer.dir, 0, rows, QUESTIONS, leases=b)
    assert info is not None and (writer.dir / "part-00000.parquet").exists()
    b.release_all()


def test_publish_is_once_even_past_the_check(tmp_path):
    """A worker paused between its lease check and its publish: link refuses to replace the published shard."""
    (tmp_path / "shard").write_text("first")
    (tmp_path / "late").write_text("second")
    assert not link_new(tmp_path / "late", tmp_path / "shard")
    assert (tmp_path / "shard").read_text() == "first" and not (tmp_path / "late").exists()


def _start_worker(run_dir, host: str, env: dict | None = None) -> subprocess.Popen:
    full = {**os.environ, "SELFTRAIN_HOST": host, **(env or {})}
    cmd = [
        sys.executable,
        "-m",
        "selftrain.cli",
        "work",
        str(run_dir),
        "--stage",
        "sample",
        "--iteration",
        "0",
    ]
    return subprocess.Popen(
        cmd, env=full, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.slow
def test_workers_on_three_hosts_one_killed_mid_shard(tiny_model, tmp_path, capsys):
    """Three `selftrain work` processes as hosts a, b, c on one sample stage; a is SIGKILLed right after its
    first claim. b and c take its shard over once the lease expires; the table equals a single-process run's;
    every shard is published once and records its writer."""
    from selftrain import cli as selftrain_cli

    data = {"questions_per_iteration": 16, "shard_size": 2}
    recipes = {}
    for name in ("single", "multi"):
        recipe = tiny_recipe(
            tmp_path / name, tiny_model, store={"root": str(tmp_path / name), "lease_seconds": 4}
        )
        recipe["data"] = {**recipe["data"], **data}
        recipes[name] = write_recipe(tmp_path / f"{name}.yaml", recipe)
    from selftrain.pipeline import execute_stage
    from selftrain.recipes import load_config
    from selftrain.runner import init_run

    # the reference: the same stages in this process
    cfg = load_config(recipes["single"])
    single = init_run(cfg)
    for stage in ("questions", "sample"):
        execute_stage(cfg, single, 0, stage)
    reference = read_stage(single.stage_dir(0, "sample")).to_pylist()

    # the run to be worked: its questions, then workers on its sample stage
    cfg = load_config(recipes["multi"])
    store = init_run(cfg)
    execute_stage(cfg, store, 0, "questions")
    a = _start_worker(store.run_dir, "host-a", {"SELFTRAIN_KILL_AT": "sample:claim:*"})
    out_a = a.communicate(timeout=300)[0]
    assert a.returncode == -signal.SIGKILL, out_a[-2000:]
    # a's claim is live for lease_seconds: `status` names it and its host
    assert selftrain_cli.main(["status", str(store.run_dir)]) == 0
    status = capsys.readouterr().out
    assert "sample shards: 0 done, 1 claimed, 7 free (of 8)" in status, status
    assert "host-a pid" in status and "renewed" in status, status
    workers = [_start_worker(store.run_dir, h) for h in ("host-b", "host-c")]
    outs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert "took over part-" in "".join(outs), outs
    manifest = store.manifest(0, "sample")
    assert manifest is not None
    assert read_stage(store.stage_dir(0, "sample")).to_pylist() == reference
    writers = [s.writer.split(":")[0] for s in manifest.shards]
    assert set(writers) <= {"host-b", "host-c"} and len(writers) == 8, writers
    assert not (store.stage_dir(0, "sample") / ".leases").exists()  # a complete folder holds no leases
    assert sum("wrote the manifest" in o and "this worker" in o for o in outs) == 1, outs
    # a worker that arrives after the end finds nothing to do and leaves the stage as it is
    from selftrain.stages.worker import work

    assert work(store, 0, "sample") is None
    assert store.manifest(0, "sample") == manifest


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _produce(todo):  # noqa: ANN001, ANN202
    return ((i, [_row(i)]) for i in todo)


def test_a_complete_folder_holds_no_leases(tmp_path, monkeypatch):
    """The chaos bench's find: a worker killed after claiming (its claim and clock file left) and the stage then
    completed by another: the folder holds its shards and manifest only; a late worker creates nothing."""
    from selftrain.stages import parallel
    from selftrain.store import MANIFEST, Manifest, write_manifest

    writer = StageWriter(tmp_path / "stage", "fp")
    killed = Leases(writer.dir, 2, ttl_s=60)
    killed.pid = _dead_pid()  # this host, a dead pid: its claim expires at once
    assert killed.try_claim("part-00001")
    killed.clock()
    killed._stop.set()
    shards = parallel.work_shards(writer, "sample", [1, 1], _produce, QUESTIONS, "test", 60)
    assert shards is not None and (writer.dir / ".leases" / "part-00001.2").exists()  # taken over
    manifest = Manifest(stage="questions", iteration=0, fingerprint="fp", output_id="x", shards=shards)
    write_manifest(writer.dir, manifest, writer.leases)
    names = sorted(p.name for p in writer.dir.iterdir())
    assert names == [MANIFEST, "part-00000.parquet", "part-00001.parquet"], names
    # a worker that starts after the manifest creates nothing
    assert parallel.work_shards(writer, "sample", [1, 1], _produce, QUESTIONS, "test", 60) is None
    assert not (writer.dir / ".leases").exists()

    # one that passed that check just before the manifest was written, and made `.leases/` after the manifest's
    # writer had cleared it (or while it clears it: FileNotFoundError), clears what it made
    hidden = tmp_path / "manifest"
    for cleared_under_it in (False, True):

        class Late(Leases):
            def __init__(self, *args, cleared=cleared_under_it, **kwargs):  # noqa: ANN002, ANN003
                super().__init__(*args, **kwargs)
                if cleared:
                    parallel.clear(writer.dir)
                hidden.rename(writer.dir / MANIFEST)

        (writer.dir / MANIFEST).rename(hidden)
        monkeypatch.setattr(parallel, "Leases", Late)
        assert parallel.work_shards(writer, "sample", [1, 1], _produce, QUESTIONS, "test", 60) is None
        assert not (writer.dir / ".leases").exists()


def test_resume_clears_lease_litter_of_a_complete_stage(tmp_path):
    """A worker killed between the manifest and its clearing leaves `.leases/`: the stage is complete, and the
    next run clears it."""
    from selftrain.pipeline import execute_stage
    from selftrain.plan import stage_state

    cfg, store = questions_only(tmp_path)
    manifest = execute_stage(cfg, store, 0, "questions")
    litter = store.stage_dir(0, "questions") / ".leases"
    litter.mkdir()
    (litter / "clock-vm-1-123").touch()
    (litter / "part-00001.2").write_text("{}")
    assert stage_state(cfg, store, 0, "questions").status == "done"  # complete, litter or not
    assert execute_stage(cfg, store, 0, "questions") == manifest
    assert not litter.exists()
