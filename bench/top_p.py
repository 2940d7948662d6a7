"""engine.fast_top_p: the sample stage with selftrain's top-p (top 256 logits per row) against vLLM's own (a
sort of the whole vocabulary every decode step), on the SmolLM2 demo recipe: same questions, seeds and engine
settings, each stage in a fresh process, one after the other.

    .venv/bin/python bench/top_p.py [--questions 120] [--recipe configs/smollm2-demo.yaml] [--set key=value ...]

Ends with: RESULT fast_sampling_s=<x> sort_sampling_s=<y> speedup=<y/x> same_completions=<k>/<n>
(sampling seconds from each stage's manifest, engine start excluded; completions compared byte for byte).
Run it alone on the machine: a job beside it changes both timings.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, manifest, prepare_run, run_child  # noqa: E402


def _completions(run_dir: Path) -> dict[tuple[str, int], str]:
    from selftrain.store import read_stage

    rows = read_stage(run_dir / "iter-000" / "sample").to_pylist()
    return {(r["question_id"], r["sample_index"]): r["completion"] for r in rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=120)
    p.add_argument("--recipe", default=str(ROOT / "configs" / "smollm2-demo.yaml"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()

    root = Path(tempfile.mkdtemp(prefix="selftrain-bench-top-p-"))
    runs: dict[str, dict] = {}
    for name, fast in (("fast", "true"), ("sort", "false")):
        overrides = [
            f"run.name={name}",
            f"data.questions_per_iteration={args.questions}",
            f"engine.fast_top_p={fast}",
            *args.set,
        ]
        run_dir = prepare_run(root, overrides, Path(args.recipe))
        wall, peak, _ = run_child("selftrain.stages", str(run_dir), "0", "sample")
        stats = manifest(run_dir, "sample")["stats"]
        runs[name] = {"dir": run_dir, "stats": stats}
        print(
            f"{name}: {stats['samples']} samples, {stats['mean_tokens']} tokens on average, "
            f"sampling {stats['sampling_s']:.1f} s, engine start {stats['engine_load_s']:.1f} s, "
            f"stage wall {wall:.1f} s, peak RSS {peak} MiB",
            flush=True,
        )
    fast, sort = (_completions(runs[k]["dir"]) for k in ("fast", "sort"))
    same = sum(fast.get(key) == text for key, text in sort.items())
    f_s, s_s = runs["fast"]["stats"]["sampling_s"], runs["sort"]["stats"]["sampling_s"]
    print(
        f"RESULT fast_sampling_s={f_s:.1f} sort_sampling_s={s_s:.1f} speedup={s_s / f_s:.2f} "
        f"same_completions={same}/{len(sort)}"
    )


if __name__ == "__main__":
    main()
