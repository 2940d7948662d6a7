"""Data-parallel stages: every worker process (this machine's `engine.workers`, or `selftrain work` on another
machine sharing the store) claims shards with leases (selftrain.leases) until every shard is published; the
worker that finds them all done, and wins the manifest's claim, checks every shard's sha256 and writes the
manifest. A worker that dies mid-shard leaves its lease to expire; a waiting worker then takes the shard over.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from selftrain.faults import maybe_kill
from selftrain.leases import Leases, clear
from selftrain.progress import Progress
from selftrain.store import MANIFEST, ShardInfo, StageWriter, StoreError, file_info, shard_name, write_shard

log = logging.getLogger(__name__)

Produce = Callable[[Iterator[int]], Iterator[tuple[int, list[dict]]]]


def work_shards(
    writer: StageWriter,
    stage: str,
    sizes: list[int],
    produce: Produce,
    schema: pa.Schema,
    desc: str,
    lease_s: float,
) -> list[ShardInfo] | None:
    """Claim, produce and publish shards of `writer.dir` until all len(sizes) are published (sizes[i]: the
    questions in shard i, for progress). Returns every shard's info in the worker that is to write the
    manifest, None in every other."""

    n = len(sizes)
    if (writer.dir / MANIFEST).exists():
        return None  # complete: a late worker creates nothing in the folder (no `.leases/`)
    leases = Leases(writer.dir, n, lease_s)
    done = {i for i in range(n) if (writer.dir / shard_name(i)).exists()}
    if done:
        log.info("%s: %d of %d shard(s) already published", desc, len(done), n)
    # every worker scans from shard 0: a lost race costs one failed link (~2 ms), and a lone worker writes its
    # shards in order, as before leases (a start drawn per pid made the kill-at-shard tests depend on the pid)
    order = list(range(n))
    try:
        with Progress(sum(sizes[i] for i in range(n) if i not in done), desc, unit="question") as bar:
            while len(done) < n:
                claimed: list[int] = []
                for index, rows in produce(_claims(writer, leases, stage, order, done, claimed)):
                    info = write_shard(writer.dir, index, rows, schema, leases=leases)
                    leases.release(leases.key(index))
                    if (writer.dir / shard_name(index)).exists():  # by this worker, or the one that took over
                        done.add(index)
                    if info is not None:
                        leases.record_done(leases.key(index), {"sha256": info.sha256, "rows": info.rows})
                        bar.update(sizes[index])
                        maybe_kill(stage, "shard", index)
                if not claimed and len(done) < n:
                    time.sleep(min(lease_s / 4, 2.0))  # the rest is claimed by others: wait, maybe take over
        # the manifest is checked again once claimed: its writer may have written it meanwhile (and cleared
        # `.leases/`, this claim being a new one)
        mine = leases.try_claim("manifest") and not (writer.dir / MANIFEST).exists()
    except FileNotFoundError:
        leases.release_all()
        if not (writer.dir / MANIFEST).exists():
            raise
        mine = False  # the manifest's writer cleared `.leases/` under this worker: the stage is complete
    except BaseException:
        leases.release_all()  # a failed worker's shards are free at once, not after expiry
        raise
    if not mine:
        leases.release_all()
        if (writer.dir / MANIFEST).exists():
            clear(writer.dir)  # what this late worker created after the manifest's writer had cleared it
        return None
    writer.leases = leases  # renewed until `finish` has written the manifest
    return checked_shards(writer, leases, n)


def _claims(
    writer: StageWriter, leases: Leases, stage: str, order: list[int], done: set[int], claimed: list[int]
) -> Iterator[int]:
    """The shards this worker claims, one at a time as the engine asks for the next (appended to claimed)."""

    for i in order:
        if i in done:
            continue
        if (writer.dir / shard_name(i)).exists():
            done.add(i)
        elif leases.try_claim(leases.key(i)):
            if (writer.dir / shard_name(i)).exists():  # published just before our claim
                leases.release(leases.key(i), remove=True)
                done.add(i)
                continue
            claimed.append(i)
            maybe_kill(stage, "claim", i)
            yield i


def checked_shards(writer: StageWriter, leases: Leases, n: int) -> list[ShardInfo]:
    """Every shard's info, each sha256 checked against what its publisher recorded, with its writer."""
    shards = []
    for i in range(n):
        path = writer.dir / shard_name(i)
        try:
            rows = pq.read_metadata(path).num_rows
        except (pa.ArrowInvalid, OSError) as e:
            raise StoreError(f"corrupt shard {path}: {str(e).splitlines()[0]}") from None
        info = file_info(path, rows)
        record = leases.done_record(leases.key(i))
        if record is not None:
            if record.get("sha256") != info.sha256:
                raise StoreError(f"{path}: sha256 differs from what its writer published")
            info.writer = f"{record['host']}:{record['pid']}"
        shards.append(info)
    return shards


def run_workers(inputs, workers: int, engine_gpus: int = 1) -> None:  # noqa: ANN001 - StageInputs (cycle)
    """Run `python -m selftrain.stages.worker` n times in parallel, one engine each; they share the stage's
    shards through leases, and the last one writes the manifest.

    On GPUs each worker sees its own `engine_gpus` devices (CUDA_VISIBLE_DEVICES); on CPUs the cores are
    split between them.
    """
    import subprocess

    gpus, per = _gpu_count(), engine_gpus
    procs = []
    for k in range(workers):
        env = dict(os.environ)
        if gpus >= workers * per:  # worker k gets devices k*per .. k*per+per-1 (a tensor-parallel group)
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(k * per + d) for d in range(per))
        else:
            threads = str(max(1, (os.cpu_count() or 1) // workers))
            env.update(OMP_NUM_THREADS=threads, VLLM_CPU_OMP_THREADS_BIND="nobind")
        cmd = [sys.executable, "-m", "selftrain.stages.worker", str(inputs.store.run_dir)]
        cmd += [str(inputs.iteration), inputs.stage]
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
