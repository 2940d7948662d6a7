"""The on-disk store: per-iteration stage folders, atomic shards, manifests written last, a run lock.

A stage's output is complete iff its `.manifest.json` exists (or, in folders written before the rename, the
legacy `_manifest.json`). Metadata names start with a dot so that `datasets.load_dataset("parquet", data_dir=…)`
and `pandas.read_parquet(folder)`, which read every other file in a folder, see only the shards. Shards are written to a temp name and renamed,
so a reader never sees half a file and a crashed stage keeps every finished shard. Old output is moved aside,
never deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from selftrain import runlock
from selftrain.errors import StoreError, now
from selftrain.fileio import atomic_write_text, sha256_file
from selftrain.leases import LeaseLost, Leases, clear
from selftrain.schemas import SCHEMA_VERSION
from selftrain.spec import KINDS

log = logging.getLogger(__name__)

# Dot-prefixed: Parquet readers given the folder skip them (`_name` breaks load_dataset, `name.json` both).
MANIFEST = ".manifest.json"
STARTED = ".started.json"  # fingerprint of a stage in progress: finished shards are reused only if it matches
FAILED = ".failed.json"
DAMAGED = ".damaged.json"  # written by `selftrain verify` when a file's sha256 differs from the manifest
# Names before the dot prefix: still read (a run folder written then stays complete), never written.
LEGACY = {name: "_" + name[1:] for name in (MANIFEST, STARTED, FAILED, DAMAGED)}
METRICS = ".metrics.json"  # the evaluate stage's accuracy table (also in its manifest's stats)

# A stage's folder is its name (selftrain.spec). Runs written before that rename keep the old folder names and
# are read as they are: a stage folder under its old name is used wherever one exists (never renamed, so
# read-only commands never write), and anything new is written under the new name.
LEGACY_FOLDERS = {"sample": "samples", "score": "scores", "train": "policy", "evaluate": "eval"}


class ShardInfo(BaseModel):
    name: str
    rows: int
    sha256: str
    bytes: int | None = Field(
        None, description="File size: `status` compares it (cheap); None in old manifests."
    )
    writer: str | None = Field(
        None, description="host:pid of the worker that wrote it (data-parallel stages); None where unknown."
    )


class Manifest(BaseModel):
    stage: str
    iteration: int
    fingerprint: str
    output_id: str = Field(
        description="Changes whenever this output is (re)built; downstream fingerprints use it."
    )
    config: dict[str, Any] = Field(default_factory=dict, description="Flattened config keys this stage read.")
    upstream: dict[str, str] = Field(default_factory=dict, description="Upstream stage -> its output_id.")
    shards: list[ShardInfo] = Field(default_factory=list)
    files: list[ShardInfo] = Field(default_factory=list, description="Non-shard outputs (adapter, metrics).")
    schema_version: int = SCHEMA_VERSION
    started_at: str = ""
    finished_at: str = ""
    versions: dict[str, str] = Field(default_factory=dict)
    stats: dict[str, Any] = Field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)


def marker(stage_dir: Path, name: str) -> Path:
    """The metadata file `name` (MANIFEST, STARTED, FAILED, DAMAGED) of a stage folder: the current name, or the
    legacy `_name` when only that exists (folders written before the rename are read as they are, not migrated,
    so read-only commands such as `status` never write)."""
    path = stage_dir / name
    if not path.exists() and name in LEGACY and (stage_dir / LEGACY[name]).exists():
        return stage_dir / LEGACY[name]
    return path


def remove_marker(stage_dir: Path, name: str) -> None:
    """Remove a metadata file under both its names."""
    (stage_dir / name).unlink(missing_ok=True)
    if name in LEGACY:
        (stage_dir / LEGACY[name]).unlink(missing_ok=True)


def remove_dead_temp_files(folder: Path) -> list[Path]:
    """Remove `.<name>.tmp-<pid>` files whose writer is dead: a SIGKILL between write and rename leaves one,
    and readers skip it (dot prefix), so nothing else would ever clean it up."""
    removed = []
    for tmp in folder.glob(".*.tmp-*"):
        owner = tmp.name.rsplit(".tmp-", 1)[1]
        # `<pid>`, or `<host>-<pid>` from a data-parallel worker: only this host's dead writers are known dead
        host, _, pid = owner.rpartition("-")
        if host and host != runlock.host_id():
            continue
        if pid.isdigit() and not runlock.pid_alive(int(pid)) and tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    if removed:
        log.info("removed %d temp file(s) of dead writers in %s", len(removed), folder)
    return removed


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def write_shard(
    out_dir: Path, index: int, rows: list[dict[str, Any]], schema: pa.Schema, leases: Leases | None = None
) -> ShardInfo | None:
    """Write rows as one Parquet shard through `schema` (temp file + rename). With `leases` (a data-parallel
    stage): published only while this worker holds the shard's lease, and never over an existing shard;
    None when not published."""

    table = pa.Table.from_pylist(rows, schema=schema)
    path = out_dir / shard_name(index)
    owner = f"{runlock.host_id()}-{os.getpid()}" if leases else str(os.getpid())
    tmp = out_dir / f".{path.name}.tmp-{owner}"
    try:
        if table.num_rows:
            pq.write_table(table, tmp)
        else:  # no row group at all: datasets' parquet loader fails on an empty one (batch size 0)
            with pq.ParquetWriter(tmp, table.schema):
                pass
        if leases is None:
            os.replace(tmp, path)
        else:
            leases.check(leases.key(index))  # LeaseLost: another worker has it now
            if not runlock.link_new(tmp, path):
                log.warning("%s was published by another worker; this copy is dropped", path.name)
                return None
    except LeaseLost as e:
        log.warning("%s not published: %s", path.name, e)
        tmp.unlink(missing_ok=True)
        return None
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not leave half a shard behind
        raise
    return file_info(path, table.num_rows)


def file_info(path: Path, rows: int = 0) -> ShardInfo:
    """What a manifest records of one output file: name, rows, sha256 and size."""
    return ShardInfo(name=path.name, rows=rows, sha256=sha256_file(path), bytes=path.stat().st_size)


def read_shard(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise StoreError(f"corrupt shard {path}: {str(e).splitlines()[0]}") from None


def verify_stage(stage_dir: Path) -> Manifest:
    """Check that a completed stage of any kind (table or policy) is intact: every shard and file its
    manifest lists exists with the recorded sha256. Raises StoreError naming the first bad file."""
    manifest = load_manifest(stage_dir)
    if manifest is None:
        raise StoreError(f"{stage_dir} is not complete (no {MANIFEST})")
    for entry in [*manifest.shards, *manifest.files]:
        _check_file(stage_dir / entry.name, entry)
    return manifest


def damage(stage_dir: Path, manifest: Manifest, checksums: bool = False) -> list[str]:
    """What is wrong with a completed stage's files: missing, a size other than the manifest's (a stat per
    file, cheap enough for every `status`), with `checksums` a sha256 that differs; plus what an earlier
    `selftrain verify` found and recorded. Empty when intact."""
    problems = []
    for entry in [*manifest.shards, *manifest.files]:
        path = stage_dir / entry.name
        if not path.is_file():
            problems.append(f"{entry.name} is missing")
        elif entry.bytes is not None and path.stat().st_size != entry.bytes:
            problems.append(f"{entry.name} has {path.stat().st_size} bytes, the manifest says {entry.bytes}")
        elif checksums and sha256_file(path) != entry.sha256:
            problems.append(f"{entry.name}: sha256 differs from the manifest")
    damaged = marker(stage_dir, DAMAGED)
    if not checksums and damaged.exists():
        with contextlib.suppress(OSError, ValueError):
            problems += json.loads(damaged.read_text()).get("problems", [])
    return problems


def _check_file(path: Path, entry: ShardInfo) -> None:
    kind = "shard" if path.suffix == ".parquet" else "file"
    if not path.exists():
        raise StoreError(f"missing {kind} {path} (listed in {MANIFEST})")
    if sha256_file(path) != entry.sha256:
        raise StoreError(f"corrupt {kind} {path}: sha256 differs from {MANIFEST}")


def read_stage(stage_dir: Path, verify: bool = True) -> pa.Table:
    """All shards of a completed stage as one table; with `verify`, checks sha256 against the manifest."""
    manifest = load_manifest(stage_dir)
    if manifest is None:
        raise StoreError(f"{stage_dir} is not complete (no {MANIFEST})")
    schema = KINDS[manifest.stage].schema if manifest.stage in KINDS else None
    if schema is None:
        # a policy folder holds an adapter, not Parquet: callers that only need it intact use verify_stage
        raise StoreError(f"{stage_dir} holds the {manifest.stage} stage's files, not a table")
    tables = []
    for shard in manifest.shards:
        path = stage_dir / shard.name
        if verify:
            _check_file(path, shard)
        elif not path.exists():
            raise StoreError(f"missing shard {path} (listed in {MANIFEST})")
        tables.append(read_shard(path))
    if not tables:
        return schema.empty_table()
    # promote: shards written before a trailing nullable column was added read with it null (schemas.SCORES)
    return pa.concat_tables(tables, promote_options="default")


def load_manifest(stage_dir: Path) -> Manifest | None:
    path = marker(stage_dir, MANIFEST)
    if not path.exists():
        return None
    try:
        return Manifest.model_validate_json(path.read_text())
    except ValueError:
        raise StoreError(f"corrupt manifest {path}") from None


def write_manifest(stage_dir: Path, manifest: Manifest, leases: Leases | None = None) -> None:
    atomic_write_text(stage_dir / MANIFEST, manifest.model_dump_json(indent=2))
    if leases is not None:
        leases.release_all(remove=False)  # the manifest's claim stays: a later claimant finds the manifest

    clear(stage_dir)  # a complete folder holds no leases (kept until now: the manifest's claim is in there)
    for name in (STARTED, FAILED, DAMAGED):
        remove_marker(stage_dir, name)


def fingerprint(stage: str, config: dict[str, Any], upstream: dict[str, str]) -> str:
    payload = json.dumps(
        {"stage": stage, "config": config, "upstream": upstream, "schema": SCHEMA_VERSION}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def move_aside(path: Path, reason: str = "stale") -> Path | None:
    """Rename `path` to `<name>.<reason>-<timestamp>` beside it; never deletes."""
    if not path.exists():
        return None
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.{reason}-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.{reason}-{stamp}-{n}")
        n += 1
    os.replace(path, target)
    log.warning("moved %s aside to %s", path, target.name)
    return target


class RunStore:
    """Paths and bookkeeping of one run folder (artifacts/runs/<run>)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)

    @property
    def config_path(self) -> Path:
        return self.run_dir / "config.yaml"

    def iter_dir(self, iteration: int) -> Path:
        return self.run_dir / f"iter-{iteration:03d}"

    def stage_dir(self, iteration: int, stage: str) -> Path:
        """iter-NNN/<stage>, or the stage's folder under its old name where a run written before holds one."""
        path = self.iter_dir(iteration) / stage
        legacy = LEGACY_FOLDERS.get(stage)
        if legacy and not path.exists() and (self.iter_dir(iteration) / legacy).exists():
            return self.iter_dir(iteration) / legacy
        return path

    def manifest(self, iteration: int, stage: str) -> Manifest | None:
        return load_manifest(self.stage_dir(iteration, stage))

    def iterations_on_disk(self) -> list[int]:
        out = []
        for p in self.run_dir.glob("iter-[0-9][0-9][0-9]"):
            out.append(int(p.name.split("-")[1]))
        return sorted(out)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One writer per run folder (see selftrain.runlock: atomic, and a dead or empty lock is taken over)."""
        with runlock.hold(self.run_dir):
            yield

    def record_child(self, pgid: int | None) -> None:
        """Note (in the lock file) the process group of a stage subprocess this run is waiting for."""
        runlock.record_child(self.run_dir, pgid)


class StageWriter:
    """Writes one stage's shards with resume: finished shards of an interrupted attempt with the same
    fingerprint are kept; anything else in the folder is moved aside first."""

    def __init__(self, stage_dir: Path, fp: str, join: bool = False):
        """`join`: a worker joining a stage that others work (`selftrain work`): never moves the folder aside;
        a folder of another attempt or a complete one is an error."""
        self.dir = stage_dir
        self.fp = fp
        self.started_at = now()
        self.leases: Leases | None = None  # the manifest's claim, in a data-parallel stage's last worker
        started = marker(stage_dir, STARTED)
        if stage_dir.exists():
            prev = json.loads(started.read_text()).get("fingerprint") if started.exists() else None
            if join and marker(stage_dir, MANIFEST).exists():
                raise StoreError(f"{stage_dir} is complete: nothing to work on")
            if join and started.exists() and prev != fp:
                raise StoreError(
                    f"{stage_dir} holds an attempt of another config (fingerprint {prev}, this one {fp}): "
                    "start the stage from the run (`selftrain run`) first"
                )
            if not join and (prev != fp or marker(stage_dir, MANIFEST).exists()):
                move_aside(stage_dir, "replaced")
        stage_dir.mkdir(parents=True, exist_ok=True)
        remove_dead_temp_files(stage_dir)
        if not started.exists():
            atomic_write_text(
                stage_dir / STARTED, json.dumps({"fingerprint": fp, "started_at": self.started_at})
            )
        remove_marker(stage_dir, FAILED)

    def done_shard(self, index: int) -> ShardInfo | None:
        path = self.dir / shard_name(index)
        if not path.exists():
            return None
        try:
            rows = pq.read_metadata(path).num_rows
        except (pa.ArrowInvalid, OSError):
            log.warning("redoing unreadable shard %s", path)
            return None
        return file_info(path, rows)

    def record_failure(self, error: BaseException) -> None:
        # best effort: on a full disk this write fails too, and must not hide the error being recorded
        with contextlib.suppress(OSError):
            atomic_write_text(
                self.dir / FAILED, json.dumps({"error": f"{type(error).__name__}: {error}", "at": now()})
            )
