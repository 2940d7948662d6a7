"""engine.in_process: the sample stage with vLLM's engine core and worker in the stage process (the uni executor,
VLLM_ENABLE_V1_MULTIPROCESSING=0) against vLLM's default (two child processes that import torch and vLLM again),
on the SmolLM2 demo recipe: same questions, seeds and engine settings, each stage in a fresh process, one after
the other.

    .venv/bin/python bench/engine_start.py [--questions 32] [--recipe configs/smollm2-demo.yaml] [--set key=value ...]

Ends with: RESULT inproc_start_s=<x> procs_start_s=<y> start_speedup=<y/x> inproc_sampling_s=<a>
procs_sampling_s=<b> same_completions=<k>/<n>
(engine start and sampling seconds from each stage's manifest; completions compared byte for byte).
Run it alone on the machine: a job beside it changes both timings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, same_completions, sample_stage_ab  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=32)
    p.add_argument("--recipe", default=str(ROOT / "configs" / "smollm2-demo.yaml"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()

    variants = {"inproc": ["engine.in_process=on"], "procs": ["engine.in_process=off"]}
    runs = sample_stage_ab("engine-start", variants, args.questions, Path(args.recipe), args.set)
    i, m = runs["inproc"]["stats"], runs["procs"]["stats"]
    same = same_completions(runs["inproc"]["completions"], runs["procs"]["completions"])
    print(
        f"RESULT inproc_start_s={i['engine_load_s']:.1f} procs_start_s={m['engine_load_s']:.1f} "
        f"start_speedup={m['engine_load_s'] / i['engine_load_s']:.2f} inproc_sampling_s={i['sampling_s']:.1f} "
        f"procs_sampling_s={m['sampling_s']:.1f} same_completions={same}"
    )


if __name__ == "__main__":
    main()
