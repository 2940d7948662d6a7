from __future__ import annotations

import json
import os
import socket

import pyarrow.parquet as pq
import pytest

from selftrain.fileio import sha256_file
from selftrain.schemas import QUESTIONS
from selftrain.store import (
    Manifest,
    RunStore,
    ShardInfo,
    StageWriter,
    StoreError,
    fingerprint,
    load_manifest,
    move_aside,
    read_stage,
    verify_stage,
    write_manifest,
    write_shard,
)

ROW = {
    "question_id": "q1",
    "source": "s",
    "split": "train",
    "task": "arithmetic",
    "question": "1+1=?",
    "reference": "2",
    "choices": None,
    "meta": "{}",
}


def _complete_stage(d, rows=2):
    StageWriter(d, "fp1")
    info = write_shard(d, 0, [ROW] * rows, QUESTIONS)
    write_manifest(
        d, Manifest(stage="questions", iteration=0, fingerprint="fp1", output_id="o1", shards=[info])
    )
    return info


def test_stage_folder_loads_with_datasets_and_pandas(tmp_path):
    """datasets' parquet loader (data_dir=) and pandas read every non-hidden file in a folder: the store's
    metadata (manifest, markers) is dot-prefixed, so a stage folder reads as its shards alone. An empty shard
    (a group that made no pairs) has no row group: datasets fails on an empty one."""
    import pandas as pd
    from datasets import load_dataset

    from selftrain.store import DAMAGED, FAILED, MANIFEST, METRICS, STARTED

    d = tmp_path / "questions"
    StageWriter(d, "fp1")
    shards = [write_shard(d, 0, [], QUESTIONS), write_shard(d, 1, [ROW] * 3, QUESTIONS)]
    assert pq.read_table(d / shards[0].name).schema.equals(QUESTIONS) and shards[0].rows == 0
    write_manifest(
        d, Manifest(stage="questions", iteration=0, fingerprint="fp1", output_id="o1", shards=shards)
    )
    assert read_stage(d).num_rows == 3
    for name in (DAMAGED, FAILED, STARTED, METRICS):  # as `verify`, a failed attempt or evaluate leave them
        (d / name).write_text("{}")
    ds = load_dataset("parquet", data_dir=str(d), split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == 3 and ds[0]["question_id"] == "q1"
    assert len(pd.read_parquet(d)) == 3
    assert MANIFEST.startswith(".") and (d / MANIFEST).exists()


def test_legacy_metadata_names_still_read(tmp_path):
    """Run folders written before the dot prefix keep working as they are: `_manifest.json` alone means
    complete, `_damaged.json` damaged, `_started.json` a resumable attempt; a rewrite clears both names."""
    from selftrain.report.gather import stage_info
    from selftrain.store import DAMAGED, LEGACY, MANIFEST, STARTED, damage

    assert LEGACY[MANIFEST] == "_manifest.json" and MANIFEST != "_manifest.json"
    store = RunStore(tmp_path / "run")
    d = store.stage_dir(0, "questions")
    info = _complete_stage(d)
    os.replace(d / MANIFEST, d / "_manifest.json")
    assert sorted(p.name for p in d.iterdir()) == ["_manifest.json", info.name]
    assert load_manifest(d).rows == 2 and read_stage(d).num_rows == 2 and verify_stage(d).output_id == "o1"
    assert stage_info(store, 0, "questions").status == "done"
    (d / "_damaged.json").write_text(json.dumps({"problems": ["recorded by an old verify"]}))
    assert damage(d, load_manifest(d)) == ["recorded by an old verify"]
    assert stage_info(store, 0, "questions").status == "damaged"
    StageWriter(d, "fp1")  # complete (legacy manifest): moved aside, as a complete stage is
    assert not (d / "_manifest.json").exists()
    assert len(list(d.parent.glob("questions.replaced-*"))) == 1

    # an interrupted attempt under the old name resumes (finished shards kept), and its manifest replaces both
    d2 = store.stage_dir(0, "sample")
    StageWriter(d2, "fp2")
    kept = write_shard(d2, 0, [ROW], QUESTIONS)
    os.replace(d2 / STARTED, d2 / "_started.json")
    (d2 / "_damaged.json").write_text("{}")
    assert stage_info(store, 0, "sample").status == "partial"
    StageWriter(d2, "fp2")
    assert (d2 / kept.name).exists() and not list(d2.parent.glob("sample.replaced-*"))
    write_manifest(
        d2, Manifest(stage="questions", iteration=0, fingerprint="fp2", output_id="o2", shards=[kept])
    )
    assert sorted(p.name for p in d2.iterdir()) == [MANIFEST, kept.name]
    assert DAMAGED not in {p.name for p in d2.iterdir()}


def test_shard_written_through_schema_and_atomically(tmp_path):
    info = write_shard(tmp_path, 3, [ROW], QUESTIONS)
    assert info.name == "part-00003.parquet" and info.rows == 1
    assert pq.read_schema(tmp_path / info.name).equals(QUESTIONS)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_schema_rejects_wrong_types(tmp_path):
    with pytest.raises(Exception):  # noqa: B017 - pyarrow raises ArrowInvalid/TypeError
        write_shard(tmp_path, 0, [{**ROW, "question": 12.5}], QUESTIONS)
    assert not list(tmp_path.glob("part-*"))


def test_manifest_last_and_corruption_detected(tmp_path):
    d = tmp_path / "questions"
    _complete_stage(d)
    assert load_manifest(d).rows == 2
    assert read_stage(d).num_rows == 2
    with open(d / "part-00000.parquet", "r+b") as f:
        f.seek(10)
        f.write(b"garbage")
    with pytest.raises(StoreError, match="corrupt shard .*part-00000.parquet"):
        read_stage(d)


def test_policy_stage_is_verified_not_read_as_a_table(tmp_path):
    """A train output lists files (the adapter), no shards: verify_stage checks them; read_stage says it is
    not a table instead of failing on a schema lookup (the old KeyError 'train' of `selftrain rerun`)."""
    d = tmp_path / "policy"
    StageWriter(d, "fp1")
    (d / "adapter_model.safetensors").write_bytes(b"weights")
    info = ShardInfo(
        name="adapter_model.safetensors", rows=0, sha256=sha256_file(d / "adapter_model.safetensors")
    )
    write_manifest(d, Manifest(stage="train", iteration=0, fingerprint="fp1", output_id="o1", files=[info]))
    assert verify_stage(d).stage == "train"
    with pytest.raises(StoreError, match="not a table"):
        read_stage(d)
    (d / "adapter_model.safetensors").write_bytes(b"weightz")
    with pytest.raises(StoreError, match="corrupt file .*adapter_model.safetensors"):
        verify_stage(d)
    (d / "adapter_model.safetensors").unlink()
    with pytest.raises(StoreError, match="missing file"):
        verify_stage(d)


def test_writer_resumes_same_fingerprint_and_moves_other_aside(tmp_path):
    d = tmp_path / "samples"
    StageWriter(d, "fpA")
    write_shard(d, 0, [ROW], QUESTIONS)
    w = StageWriter(d, "fpA")  # same attempt resumed: shard kept
    assert w.done_shard(0) is not None and w.done_shard(1) is None
    StageWriter(d, "fpB")  # another config: old partial output moved aside, not deleted
    assert not (d / "part-00000.parquet").exists()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("samples.replaced-")]
    assert len(aside) == 1 and (aside[0] / "part-00000.parquet").exists()


def test_resumed_writer_removes_temp_files_of_dead_writers_only(tmp_path):
    """A SIGKILL between a shard's write and its rename leaves `.part-NNNNN.parquet.tmp-<pid>`; the next attempt
    removes it, but never a live writer's."""
    d = tmp_path / "sample"
    StageWriter(d, "fpA")
    dead = d / f".part-00001.parquet.tmp-{2**22 + 12345}"
    live = d / f".part-00002.parquet.tmp-{os.getpid()}"
    dead.write_bytes(b"half a shard")
    live.write_bytes(b"being written")
    StageWriter(d, "fpA")
    assert not dead.exists() and live.exists()


def test_move_aside_never_overwrites(tmp_path):
    for _ in range(3):
        (tmp_path / "x").mkdir()
        assert move_aside(tmp_path / "x") is not None
    assert len(list(tmp_path.glob("x.stale-*"))) == 3


def test_fingerprint_depends_on_config_and_upstream():
    a = fingerprint("sample", {"sampling.n": 5}, {"q": "1"})
    assert a == fingerprint("sample", {"sampling.n": 5}, {"q": "1"})
    assert a != fingerprint("sample", {"sampling.n": 4}, {"q": "1"})
    assert a != fingerprint("sample", {"sampling.n": 5}, {"q": "2"})


def test_lock_refuses_a_second_live_owner(tmp_path):
    store = RunStore(tmp_path / "run")
    store.run_dir.mkdir()
    # pid 1 is alive on every Linux host
    (store.run_dir / ".lock").write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "since": "t"}))
    with pytest.raises(StoreError, match="in use by pid 1"):
        with store.lock():
            pass


def test_lock_taken_over_from_dead_process(tmp_path):
    store = RunStore(tmp_path / "run")
    store.run_dir.mkdir()
    dead = 2**22 + 12345
    (store.run_dir / ".lock").write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
    with store.lock():
        assert json.loads((store.run_dir / ".lock").read_text())["pid"] == os.getpid()
    assert not (store.run_dir / ".lock").exists()


@pytest.mark.parametrize("content", [b"", b'{"pid": 12', b"\xff\xfe garbage", b"[]"])
def test_empty_or_corrupt_lock_is_taken_over(tmp_path, content):
    """A lock file created but never written (the process died, or the disk was full) must not wedge the run
    folder for ever ("in use by pid None on None")."""
    store = RunStore(tmp_path / "run")
    store.run_dir.mkdir()
    lock = store.run_dir / ".lock"
    lock.write_bytes(content)
    os.utime(lock, (0, 0))  # older than the grace period an older selftrain may still be writing in
    with store.lock():
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_lock_write_failure_leaves_no_lock(tmp_path, monkeypatch):
    """The lock's content is on disk before its name appears: a failing write (disk full) leaves neither an
    empty `.lock` nor a temp file, and says so in one line."""
    import errno

    from selftrain import runlock

    store = RunStore(tmp_path / "run")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runlock.os, "fsync", full)
    with pytest.raises(StoreError, match="cannot write the lock file .*No space left on device"):
        with store.lock():
            pass
    assert list(store.run_dir.iterdir()) == []
    monkeypatch.undo()
    with store.lock():  # the disk has room again: the next run goes ahead
        pass


def test_damage_sizes_cheaply_checksums_on_request(tmp_path):
    from selftrain.store import DAMAGED, damage

    d = tmp_path / "questions"
    info = _complete_stage(d)
    assert info.bytes == (d / info.name).stat().st_size
    manifest = load_manifest(d)
    assert damage(d, manifest) == [] and damage(d, manifest, checksums=True) == []
    shard = d / info.name
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert damage(d, manifest) == []  # same size: only the checksum sees it
    assert damage(d, manifest, checksums=True) == [f"{info.name}: sha256 differs from the manifest"]
    (d / DAMAGED).write_text(json.dumps({"problems": ["recorded by verify"]}))
    assert damage(d, manifest) == ["recorded by verify"]
    shard.write_bytes(bytes(data[:-1]))
    assert f"{info.name} has {len(data) - 1} bytes, the manifest says {len(data)}" in damage(d, manifest)
    shard.unlink()
    assert damage(d, manifest, checksums=True) == [f"{info.name} is missing"]
