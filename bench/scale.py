"""Scaling out, measured on this machine's filesystem.

1. Claim stress: W worker processes work one data-parallel stage of S zero-work shards (an empty Parquet
   shard each) through the real lease path (selftrain.stages.parallel.work_shards): claim, publish with
   link, done record, the last worker checks every sha256 and wins the manifest's claim.
2. With --sample: the sample stage of the tiny recipe (hf engine) with 1 and 2 data-parallel workers.

    .venv/bin/python bench/scale.py [--workers 1 4 16] [--shards 2000] [--sample]

Prints per W: RESULT workers=W shards=S shards_s=X duplicates=D lost=L claim_ms=Y
(claim_ms: mean wall time of one successful claim, scan and lost races included)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, ensure_tiny_model, prepare_run  # noqa: E402


def _worker(stage_dir: str, shards: int, out: mp.Queue) -> None:
    from selftrain.leases import Leases
    from selftrain.schemas import SAMPLES
    from selftrain.stages.parallel import work_shards
    from selftrain.store import StageWriter

    claim_s = [0.0, 0]
    original = Leases.try_claim

    def timed(self, key, now=None):  # noqa: ANN001, ANN202
        start = time.perf_counter()
        ok = original(self, key, now)
        claim_s[0] += time.perf_counter() - start
        claim_s[1] += ok
        return ok

    Leases.try_claim = timed  # type: ignore[method-assign]
    writer = StageWriter(Path(stage_dir), "bench", join=True)
    published = []

    def produce(todo):  # noqa: ANN001, ANN202
        for i in todo:
            published.append(i)
            yield i, []

    result = work_shards(writer, "sample", [1] * shards, produce, SAMPLES, "bench", lease_s=30.0)
    if result is not None:  # stands for the stage's manifest, which the real finisher writes
        from selftrain.fileio import atomic_write_text
        from selftrain.store import MANIFEST

        atomic_write_text(writer.dir / MANIFEST, "{}")
    out.put(
        {"claims": claim_s[1], "claim_s": claim_s[0], "produced": published, "finisher": result is not None}
    )


def claim_stress(workers: int, shards: int, root: Path) -> dict:
    import selftrain.stages.parallel  # noqa: F401  (imported before the fork: the workers time work, not imports)

    stage_dir = Path(tempfile.mkdtemp(dir=root, prefix=f"stress-w{workers}-")) / "sample"
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()
    start = time.perf_counter()
    procs = [ctx.Process(target=_worker, args=(str(stage_dir), shards, out)) for _ in range(workers)]
    sys.stdout.flush()  # a forked child flushes its copy of an unflushed buffer when it exits: lines twice
    for p in procs:
        p.start()
    results = [out.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
    wall = time.perf_counter() - start
    produced = [i for r in results for i in r["produced"]]
    on_disk = len(list(stage_dir.glob("part-*.parquet")))
    done_records = len(list((stage_dir / ".leases").glob("part-*.done")))
    claims = sum(r["claims"] for r in results)
    return {
        "workers": workers,
        "shards": shards,
        "shards_s": round(shards / wall, 1),
        "duplicates": len(produced) - len(set(produced)) + (done_records - on_disk),
        "lost": shards - on_disk,
        "claim_ms": round(1000 * sum(r["claim_s"] for r in results) / max(claims, 1), 3),
        "finishers": sum(r["finisher"] for r in results),
        "wall_s": round(wall, 2),
    }


def sample_throughput(workers: int, root: Path) -> dict:
    """The tiny recipe's sample stage (hf engine, 96 questions x 5) with `workers` data-parallel workers."""
    from selftrain.pipeline import execute_stage
    from selftrain.recipes import load_config
    from selftrain.store import RunStore

    model = ensure_tiny_model()
    overrides = [
        f"model.path={model}",
        "model.bootstrap=null",
        "engine.threads=1",  # as each of 2 workers on 2 cores gets: torch with 2 threads under load is ~10x slower
        f"engine.workers={workers}",
        "engine.isolation=inline",
    ]
    run_dir = prepare_run(root / f"sample-w{workers}", overrides)
    cfg = load_config(run_dir / "config.yaml")
    start = time.perf_counter()
    manifest = execute_stage(cfg, RunStore(run_dir), 0, "sample")
    wall = time.perf_counter() - start
    return {
        "workers": workers,
        "samples": manifest.rows,
        "wall_s": round(wall, 2),
        "samples_s": round(manifest.rows / wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--shards", type=int, default=2000)
    parser.add_argument(
        "--dir", default=str(ROOT / "artifacts"), help="where the stage folders go (the store's filesystem)"
    )
    parser.add_argument("--sample", action="store_true", help="also the sample stage with 1 and 2 workers")
    args = parser.parse_args()
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=root, prefix="bench-scale-"))
    for w in args.workers:
        r = claim_stress(w, args.shards, work)
        print(
            "RESULT "
            + " ".join(
                f"{k}={r[k]}" for k in ("workers", "shards", "shards_s", "duplicates", "lost", "claim_ms")
            )
        )
        print("  " + json.dumps(r), flush=True)
    if args.sample:
        rates = {w: sample_throughput(w, work) for w in (1, 2)}
        for r in rates.values():
            print(
                f"RESULT sample workers={r['workers']} samples={r['samples']} wall_s={r['wall_s']} samples_s={r['samples_s']}"
            )
        print(f"RESULT sample_ratio_2_over_1={rates[2]['samples_s'] / rates[1]['samples_s']:.2f}")


if __name__ == "__main__":
    main()
