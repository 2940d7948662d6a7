"""Judge throughput: P(True) for the same judge prompts three ways, each in a fresh process on the same model.

- ours (vllm): one forward pass per judge prompt, P("A") and P("B") read from the next-token logprobs
  (`logprob_token_ids`), prefix caching on;
- ours (hf): one batched transformers forward pass per judge prompt (the hf engine);
- original: the CORE-PO code's approach, two continuations per judge prompt (the log-probability of the prompt
  followed by "A", and again by "B"), with transformers.

With --model, a fourth: the same two continuations on vLLM (`prompt_logprobs`), so the one-pass read is also
compared with the original's approach on the same engine.

    .venv/bin/python bench/judging.py [--prompts 512] [--model PATH]

--model runs it on a real model folder: a chat model gets configs/smollm2-core-po.yaml's settings (core_po
judge prompts in its chat template, bf16, its engine arguments) over arithmetic_words add1,mul1 questions with
reasonings in the CORE-PO response format, 32 prompts unless --prompts says otherwise.

Ends with: RESULT judge_prompts_s=<ours vllm> original_prompts_s=<original> ratio=<ours/original>
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import TINY_RECIPE, bench_model, dispatch, emit, model_overrides, parse, run_child  # noqa: E402

WORKER = "bench_judge_worker"


def judge_prompts(tokenizer, count: int) -> list[str]:  # noqa: ANN001
    """The tiny model's judge prompts (`plain` template, synthetic arithmetic)."""
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


def chat_judge_prompts(tokenizer, cfg, count: int) -> list[str]:  # noqa: ANN001
    """A real model's judge prompts: the recipe's template over arithmetic_words add1,mul1 questions, with
    (reasoning, answer) as `PromptBuilder.parse` reads them from a completion in the CORE-PO response format,
    about half of them wrong; reasoning and answer judge prompts alternate, the reasoning judge with
    judge.max_context_reasonings other reasonings of the question."""
    import itertools

    from selftrain.data import arithmetic_words
    from selftrain.prompts import FINAL, REASONING, UNDERSTANDING, PromptBuilder

    rng = random.Random(0)
    p = cfg.prompt
    b = PromptBuilder(tokenizer, p.template, p.system, p.one_shot)
    qs = arithmetic_words.questions("add1,mul1", "train", 0, seed=1)
    out = []
    for q in itertools.islice(itertools.cycle(qs), count):
        sym, word = ("+", "Adding") if q.op == "+" else ("*", "Multiplying")

        def solution(q=q, sym=sym, word=word) -> tuple[str, str]:  # noqa: ANN001
            value = q.answer if rng.random() < 0.5 else q.answer + rng.choice([-2, -1, 1, 2, 10])
            text = (
                f"{UNDERSTANDING} The question asks for {q.a} {sym} {q.b}.\n\n"
                f"{REASONING} {word} {q.a} and {q.b} gives {q.a} {sym} {q.b} = {value}.\n\n"
                f"{FINAL} The answer is ${value}$"
            )
            parsed = b.parse(text)
            return parsed.reasoning, parsed.answer

        sols = [solution() for _ in range(1 + cfg.judge.max_context_reasonings)]
        if len(out) % 2:
            out.append(b.answer_judge(q.text, *sols[0]))
        else:
            out.append(b.reasoning_judge(q.text, sols[0][0], [r for r, _ in sols[1:]]))
    return out


def worker() -> None:
    mode, model, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    recipe = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    from selftrain.engines import load_engine
    from selftrain.recipes import load_config

    engine_name = "vllm" if mode in ("vllm", "original_vllm") else "hf"
    if recipe is None:  # the tiny model: the defaults, as this bench always ran
        cfg = load_config(None, [f"model.path={model}", f"engine.name={engine_name}", "judge.batch_size=64"])
    else:
        cfg = load_config(recipe, [*model_overrides(Path(model), recipe), f"engine.name={engine_name}"])
    engine = load_engine(cfg)
    if recipe is None or recipe == TINY_RECIPE:
        prompts = judge_prompts(engine.tokenizer, count)
    else:
        prompts = chat_judge_prompts(engine.tokenizer, cfg, count)
    start = time.perf_counter()
    if mode in ("original", "original_vllm"):
        p_true = engine.completion_logprobs(prompts, ["A"] * len(prompts))
        p_false = engine.completion_logprobs(prompts, ["B"] * len(prompts))
        conf = [1 / (1 + pow(2.718281828, f - t)) for t, f in zip(p_true, p_false, strict=True)]
    else:
        probs = engine.option_probs(prompts, ("A", "B"))
        conf = [a / (a + b) for a, b in probs]
    elapsed = time.perf_counter() - start
    tokens = sum(len(ids) for ids in engine.tokenizer(prompts)["input_ids"])
    emit({"prompts": len(prompts), "seconds": elapsed, "mean_conf": sum(conf) / len(conf), "tokens": tokens})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, help="default 512 (tiny model), 32 (--model)")
    ap.add_argument("--model", help="a model folder (default: the tiny model); see above")
    args = ap.parse_args()
    model, recipe = bench_model(args.model)
    if args.prompts is None:
        args.prompts = 512 if args.model is None else 32
    extra = [] if args.model is None else [str(recipe)]
    env = {}
    if args.model is not None:
        from selftrain.recipes import load_config

        kv = load_config(recipe, model_overrides(model, recipe)).engine.cpu_kvcache_gib
        env["VLLM_CPU_KVCACHE_SPACE"] = str(kv)
    modes = ("vllm", "hf", "original") if args.model is None else ("vllm", "hf", "original", "original_vllm")
    results = {}
    for mode in modes:
        wall, rss, out = run_child(
            "bench.judging", WORKER, mode, str(model), str(args.prompts), *extra, env=env
        )
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
    if "original_vllm" in results:
        r = results["original_vllm"]
        print(f"vllm one-pass vs original on vllm: ratio={ours / (r['prompts'] / r['seconds']):.2f}")
    print(f"mean judge prompt tokens={results['vllm']['tokens'] / results['vllm']['prompts']:.0f}")
    print(f"RESULT judge_prompts_s={ours:.1f} original_prompts_s={orig:.1f} ratio={ours / orig:.2f}")


if __name__ == "__main__":
    dispatch(WORKER, worker, main)
