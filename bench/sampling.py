"""Sampling throughput: our sample stage (vLLM engine, shards to Parquet) vs a bare `LLM.generate` loop that
writes nothing, on the same model, prompts and SamplingParams, each in a fresh process (engine start
included in both). Then the stage's peak memory at N and 10N questions.

    .venv/bin/python bench/sampling.py [--questions 256] [--n 5] [--max-tokens 40]

Ends with: RESULT sample_tok_s=<x> bare_tok_s=<y> ratio=<x/y>   (target ratio >= 0.90)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import dispatch, emit, ensure_tiny_model, manifest, parse, prepare_run, run_child  # noqa: E402

BARE = "bench_bare_generate"


def bare_main() -> None:
    """The baseline: tokenized prompts straight into LLM.generate, nothing written."""
    import os

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    spec = json.loads(sys.argv[1])
    llm = LLM(model=spec["model"], dtype="float32", seed=0, enable_prefix_caching=True)
    tok = llm.get_tokenizer()
    prompts = [
        TokensPrompt(prompt_token_ids=tok(p, add_special_tokens=False)["input_ids"]) for p in spec["prompts"]
    ]
    params = SamplingParams(
        n=spec["n"], temperature=1.0, top_p=0.9, max_tokens=spec["max_tokens"], seed=0, logprobs=0
    )
    start = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    gen = time.perf_counter() - start
    tokens = sum(len(o.token_ids) for out in outs for o in out.outputs)
    emit({"tokens": tokens, "generate_s": gen})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=512)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=40)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--skip-memory", action="store_true", help="skip the N vs 10N peak-memory comparison")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from selftrain.prompts import PromptBuilder
    from selftrain.store import read_stage

    model = ensure_tiny_model()
    tmp = Path(tempfile.mkdtemp(prefix="bench-sampling-"))

    def stage(questions: int, name: str) -> tuple[float, int, Path]:
        run_dir = prepare_run(
            tmp / name,
            [
                f"model.path={model}",
                "model.bootstrap=null",
                "engine.name=vllm",
                f"data.questions_per_iteration={questions}",
                f"data.shard_size={args.shard_size}",
                f"data.train.0.size={max(questions, 4000)}",
                f"sampling.n={args.n}",
                f"sampling.max_tokens={args.max_tokens}",
            ],
        )
        wall, rss, _ = run_child("selftrain.stages", str(run_dir), "0", "sample")
        return wall, rss, run_dir

    ours_wall, ours_rss, run_dir = stage(args.questions, "ours")
    m = manifest(run_dir, "sample")
    ours_tokens = sum(read_stage(run_dir / "iter-000" / "sample").column("num_tokens").to_pylist())

    tok = AutoTokenizer.from_pretrained(str(model))
    builder = PromptBuilder(tok, "plain")
    questions = read_stage(run_dir / "iter-000" / "questions").to_pylist()
    spec = {
        "model": str(model),
        "prompts": [builder.question(q["question"]) for q in questions],
        "n": args.n,
        "max_tokens": args.max_tokens,
    }
    bare_wall, bare_rss, out = run_child("bench.sampling", BARE, json.dumps(spec))
    bare = parse(out)

    # engine start (~20-40 s on CPU) is excluded from both: it is the same LLM() call and would hide the
    # difference; ours still includes sharding, prompt rendering, answer extraction and Parquet writes
    ours_tok_s = ours_tokens / m["stats"]["sampling_s"]
    bare_tok_s = bare["tokens"] / bare["generate_s"]
    print(
        f"questions={args.questions} n={args.n} max_tokens={args.max_tokens} samples={m['stats']['samples']}"
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
