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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, same_completions, sample_stage_ab  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=120)
    p.add_argument("--recipe", default=str(ROOT / "configs" / "smollm2-demo.yaml"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()

    variants = {"fast": ["engine.fast_top_p=true"], "sort": ["engine.fast_top_p=false"]}
    runs = sample_stage_ab("top-p", variants, args.questions, Path(args.recipe), args.set)
    f_s, s_s = (runs[k]["stats"]["sampling_s"] for k in ("fast", "sort"))
    same = same_completions(runs["fast"]["completions"], runs["sort"]["completions"])
    print(
        f"RESULT fast_sampling_s={f_s:.1f} sort_sampling_s={s_s:.1f} speedup={s_s / f_s:.2f} same_completions={same}"
    )


if __name__ == "__main__":
    main()
