"""End to end on a tiny model, recovery: SIGKILL then resume, rerun, damaged and stale stages, run folders
written by older layouts, concurrent runs, corrupt shards. Shares conftest's `reference` run with
test_e2e.py. Marked slow (about a minute each on 2 cores)."""

from __future__ import annotations

import json
import os

import pytest

from selftrain.fileio import sha256_file
from selftrain.store import DAMAGED, MANIFEST, RunStore

from .conftest import (
    adapter_weights,
    cli,
    copy_run,
    killed_then_resumed,
    stage_tables,
    status_rows,
    tiny_recipe,
    write_recipe,
)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kill_at", ["sample:shard:0", "score:shard:1", "train:step:2"])
def test_sigkill_then_resume_equals_uninterrupted(kill_at, reference, tmp_path, tiny_model):
    root = tmp_path / "killed"
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(root, tiny_model))
    run_dir = root / "runs" / "t"
    stage = kill_at.split(":")[0]
    stage_dir, ckpts = killed_then_resumed(recipe, run_dir, kill_at, stage)
    if stage == "train":
        assert ckpts == ["checkpoint-2"]
        manifest = json.loads((stage_dir / MANIFEST).read_text())
        assert manifest["stats"]["resumed_from"] == "checkpoint-2" and manifest["stats"]["steps"] == 4
        ref, got = adapter_weights(reference), adapter_weights(run_dir)
        assert all(float((ref[k] - got[k]).abs().max()) < 1e-5 for k in ref)
    assert stage_tables(run_dir) == stage_tables(reference)
    assert not list(run_dir.glob("iter-*/*/.leases"))  # complete folders hold no lease files (issue 28)


def test_rerun_score_keeps_upstream_and_marks_later_stale(reference, tmp_path, tiny_model):
    run_dir, _ = copy_run(reference, tmp_path, tiny_model)
    store = RunStore(run_dir)
    before = {
        st: [sha256_file(p) for p in sorted(store.stage_dir(0, st).glob("part-*"))]
        for st in ("questions", "sample")
    }
    ids = {st: store.manifest(0, st).output_id for st in ("score", "pairs", "train", "evaluate")}
    proc = cli("rerun", str(run_dir), "--iteration", "0", "--stage", "score", "--no-prefect")
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = {
        st: [sha256_file(p) for p in sorted(store.stage_dir(0, st).glob("part-*"))]
        for st in ("questions", "sample")
    }
    assert after == before
    for st, old in ids.items():
        assert store.manifest(0, st).output_id != old, st
    assert list((run_dir / "iter-000").glob("score.stale-*")) and list(
        (run_dir / "iter-000").glob("train.stale-*")
    )
    assert "iter-001/sample" in proc.stdout
    status = cli("status", str(run_dir)).stdout
    assert "iter-001/sample stale: upstream iter-000/train was rebuilt" in status


def test_rerun_every_stage_at_iteration_1_and_evaluate_at_0(reference, tmp_path, tiny_model):
    """Rerun's upstream check must not read a policy (adapter files, no shards) as a table: evaluate's upstream
    is always a policy, and sample/score/train at iteration >= 1 read the previous iteration's policy."""
    from selftrain.methods import PREFERENCE_STAGES as STAGES
    from selftrain.runner import rerun

    run_dir, _ = copy_run(reference, tmp_path, tiny_model)
    store = RunStore(run_dir)
    # README's example through the real CLI, once; the other stages in-process (same code path, no imports)
    proc = cli("rerun", str(run_dir), "--iteration", "1", "--stage", "score", "--no-prefect")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for iteration, stage in [(0, "evaluate"), *((1, s) for s in reversed(STAGES))]:
        old = store.manifest(iteration, stage).output_id
        assert rerun(store, iteration, stage) == [], (iteration, stage)
        assert store.manifest(iteration, stage).output_id != old, (iteration, stage)
    for stage in STAGES:
        assert store.manifest(1, stage) is not None, stage
    status = cli("status", str(run_dir))
    assert status.returncode == 0 and "stale" not in status.stdout, status.stdout


def test_damaged_stages_reported_by_status_and_verify_and_repaired(reference, tmp_path, tiny_model):
    """A truncated shard of a complete stage is `damaged` in status (sizes) and stops `run`; a same-size bit
    flip only `verify` (sha256) finds: it marks the stage, names the rerun that repairs it, and unmarks a stage
    repaired by hand."""
    run_dir, recipe = copy_run(reference, tmp_path, tiny_model)
    truncated = run_dir / "iter-000" / "sample" / "part-00001.parquet"
    original = truncated.read_bytes()
    truncated.write_bytes(original[:-100])
    flipped = run_dir / "iter-001" / "pairs" / "part-00000.parquet"
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))

    status = cli("status", str(run_dir))
    assert status.returncode == 0, status.stderr[-2000:]
    rows = status_rows(run_dir)
    assert rows["0"][1] == "damaged" and rows["1"][3] == "done", status.stdout  # sizes only: the flip unseen
    assert "part-00001.parquet has" in status.stdout and "selftrain verify" in status.stdout

    proc = cli("run", str(recipe), "--no-prefect")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "iter-000/sample is damaged" in last and "--iteration 0 --stage sample" in last, last

    proc = cli("verify", str(run_dir))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "iter-000/sample damaged" in proc.stdout, proc.stdout
    assert "iter-001/pairs damaged: part-00000.parquet: sha256" in proc.stdout, proc.stdout
    assert f"selftrain rerun {run_dir} --iteration 0 --stage sample" in proc.stdout
    assert f"selftrain rerun {run_dir} --iteration 1 --stage pairs" in proc.stdout
    assert status_rows(run_dir)["1"][3] == "damaged"  # marked by verify

    proc = cli("rerun", str(run_dir), "--iteration", "1", "--stage", "pairs", "--no-prefect")
    assert proc.returncode == 0, proc.stderr[-3000:]
    truncated.write_bytes(original)  # repaired by hand
    proc = cli("verify", str(run_dir))
    assert proc.returncode == 0 and "0 damaged" in proc.stdout, proc.stdout
    assert not [
        p for p in run_dir.glob(f"iter-*/*/{DAMAGED}") if "." not in p.parent.name
    ]  # (moved aside: kept)
    assert all(cell == "done" for row in status_rows(run_dir).values() for cell in row)


def test_run_folder_with_legacy_manifest_names_is_complete(reference, tmp_path, tiny_model):
    """A run folder written before the dot prefix (`_manifest.json`): status, verify and run see it complete,
    as it is (nothing redone, nothing renamed)."""
    from selftrain.store import LEGACY

    run_dir, recipe = copy_run(reference, tmp_path, tiny_model)
    manifests = sorted(run_dir.glob(f"iter-*/*/{MANIFEST}"))
    assert len(manifests) == 2 * 6
    for path in manifests:
        os.replace(path, path.with_name(LEGACY[MANIFEST]))
    assert all(cell == "done" for row in status_rows(run_dir).values() for cell in row)
    proc = cli("verify", str(run_dir))
    assert proc.returncode == 0 and "0 damaged" in proc.stdout, proc.stdout
    proc = cli("run", str(recipe), "--no-prefect")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(run_dir.glob(f"iter-*/*/{MANIFEST}")) and not list(run_dir.glob("iter-*/*.replaced-*"))
    assert stage_tables(run_dir, 1) == stage_tables(reference, 1)


def test_run_folder_with_old_folder_names_is_read(reference, tmp_path, tiny_model):
    """A run written when folders had other names than their stages (samples/, scores/, policy/, eval/):
    status, verify and run see it complete and read it where it is (nothing redone, renamed or moved)."""
    from selftrain.store import LEGACY_FOLDERS

    run_dir, recipe = copy_run(reference, tmp_path, tiny_model)
    for it in ("iter-000", "iter-001"):
        for stage, old in LEGACY_FOLDERS.items():
            (run_dir / it / stage).rename(run_dir / it / old)
    assert all(cell == "done" for row in status_rows(run_dir).values() for cell in row)
    proc = cli("verify", str(run_dir))
    assert proc.returncode == 0 and "0 damaged" in proc.stdout, proc.stdout
    folders = lambda: sorted(str(p.relative_to(run_dir)) for p in run_dir.glob("iter-*/*"))  # noqa: E731
    before = folders()
    proc = cli("run", str(recipe), "--no-prefect")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert folders() == before and RunStore(run_dir).stage_dir(1, "train").name == "policy"
    assert stage_tables(run_dir, 1) == stage_tables(reference, 1)


def test_changed_key_makes_stage_stale_and_nothing_is_deleted(reference, tmp_path, tiny_model):
    run_dir, recipe = copy_run(reference, tmp_path, tiny_model)
    files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    proc = cli("run", str(recipe), "--no-prefect", "--set", "sampling.temperature=0.7")
    assert proc.returncode == 2
    assert "iter-000/sample is stale (sampling.temperature: 0.8 -> 0.7)" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()) == files


def test_second_concurrent_run_is_refused(reference, tmp_path, tiny_model):
    run_dir, recipe = copy_run(reference, tmp_path, tiny_model)
    with RunStore(run_dir).lock():
        proc = cli("run", str(recipe), "--no-prefect")
    assert proc.returncode == 2 and "is in use by pid" in proc.stderr, proc.stderr


def test_corrupt_shard_is_named_and_store_left_intact(reference, tmp_path, tiny_model):
    run_dir, _ = copy_run(reference, tmp_path, tiny_model)
    shard = run_dir / "iter-000" / "sample" / "part-00000.parquet"
    shard.write_bytes(shard.read_bytes()[:-40] + b"\0" * 40)
    proc = cli("show", str(shard.parent))
    assert proc.returncode == 2 and "corrupt shard" in proc.stderr and "part-00000.parquet" in proc.stderr
    proc = cli("rerun", str(run_dir), "--iteration", "0", "--stage", "score", "--no-prefect")
    assert proc.returncode == 2 and "part-00000.parquet" in proc.stderr, proc.stderr
    assert (run_dir / "iter-000" / "score" / MANIFEST).exists()  # nothing moved aside


def test_corrupt_pairs_shard_stops_train_with_one_line(reference, tmp_path, tiny_model):
    """Train reads its pairs through the store (sha256 checked): a damaged shard is named in one line, exit 2,
    and nothing is moved or written."""
    run_dir, recipe = copy_run(reference, tmp_path, tiny_model)
    shard = run_dir / "iter-001" / "pairs" / "part-00000.parquet"
    shard.write_bytes(shard.read_bytes()[:-40] + b"\0" * 40)
    for stage in ("train", "evaluate"):  # train (and so evaluate) must run again
        (run_dir / "iter-001" / stage).rename(run_dir / "iter-001" / f"{stage}.aside")
    files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    proc = cli("run", str(recipe), "--no-prefect")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "corrupt shard" in last and "iter-001/pairs/part-00000.parquet" in last, last
    assert sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()) == files
