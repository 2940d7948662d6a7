"""Judge throughput: P(True) for the same judge prompts three ways, each in a fresh process on the same model.

- ours (vllm): one forward pass per judge prompt, P("A") and P("B") read from the next-token logprobs
  (`logprob_token_ids`), prefix caching on;
- ours (hf): one batched transformers forward pass per judge prompt (the hf engine);
- original: the CORE-PO code's approach, two continuations per judge prompt (the log-probability of the prompt
  followed by "A", and again by "B"), with transformers.

    .venv/bin/python bench/judging.py [--prompts 512]

Ends with: RESULT judge_prompts_s=<ours vllm> original_prompts_s=<original> ratio=<ours/original>
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import dispatch, emit, ensure_tiny_model, parse, run_child  # noqa: E402

WORKER = "bench_judge_worker"


def judge_prompts(tokenizer, count: int) -> list[str]:  # noqa: ANN001
    from selftrain.data import synthetic
    from selftrain.prompts import PromptBuilder

    rng = random.Random(0)
    b = PromptBuilder(tokenizer, "plain")
    out = []
    for p in synthetic.problems("train", count, seed=1):
        sols = [p.solution() if rng.random() < 0.5 else synthetic.corrupt_solution(p, rng) for _ in range(3)]
        reasoning, answer = (s.strip() for s in sols[0].rsplit("####", 1))
        if len(out) % 2:
            out.append(b.answer_judge(p.question, reasoning, answer))
        else:
            out.append(
                b.reasoning_judge(p.question, reasoning, [s.rsplit("####", 1)[0].strip() for s in sols[1:]])
            )
    return out


def worker() -> None:
    mode, model, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    from selftrain.config import load_config
    from selftrain.engines import load_engine

    engine_name = "vllm" if mode == "vllm" else "hf"
    cfg = load_config(None, [f"model.path={model}", f"engine.name={engine_name}", "judge.batch_size=64"])
    engine = load_engine(cfg)
    prompts = judge_prompts(engine.tokenizer, count)
    start = time.perf_counter()
    if mode == "original":
        p_true = engine.completion_logprobs(prompts, ["A"] * len(prompts))
        p_false = engine.completion_logprobs(prompts, ["B"] * len(prompts))
        conf = [1 / (1 + pow(2.718281828, f - t)) for t, f in zip(p_true, p_false, strict=True)]
    else:
        probs = engine.option_probs(prompts, ("A", "B"))
        conf = [a / (a + b) for a, b in probs]
    elapsed = time.perf_counter() - start
    emit({"prompts": len(prompts), "seconds": elapsed, "mean_conf": sum(conf) / len(conf)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=512)
    args = ap.parse_args()
    model = ensure_tiny_model()
    results = {}
    for mode in ("vllm", "hf", "original"):
        wall, rss, out = run_child("bench.judging", WORKER, mode, str(model), str(args.prompts))
        r = parse(out)
        results[mode] = r
        print(
            f"{mode:>8}: {r['prompts']} judge prompts in {r['seconds']:.2f}s "
            f"({r['prompts'] / r['seconds']:.1f}/s, engine start excluded), mean P(True) {r['mean_conf']:.4f}, "
            f"peak RSS {rss} MiB"
        )
    ours = results["vllm"]["prompts"] / results["vllm"]["seconds"]
    hf = results["hf"]["prompts"] / results["hf"]["seconds"]
    orig = results["original"]["prompts"] / results["original"]["seconds"]
    print(f"hf one-pass vs original: ratio={hf / orig:.2f}")
    print(f"RESULT judge_prompts_s={ours:.1f} original_prompts_s={orig:.1f} ratio={ours / orig:.2f}")


if __name__ == "__main__":
    dispatch(WORKER, worker, main)
