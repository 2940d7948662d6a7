"""Training throughput: our train stage vs a bare TRL `DPOTrainer` script, same model, pairs and settings, each
in a fresh process. Steps/s come from each trainer's own train_runtime (model loading excluded from both).

    .venv/bin/python bench/train.py [--steps 100] [--repeats 3] [--bf16] [--model PATH]

The two sides alternate (ours, bare, ours, bare, ...) so drift in the machine's speed hits both alike; each
side's median over the repeats is compared. On a GPU both train there (--bf16 for bf16 mixed precision).
Ends with: RESULT ours_steps_s=<x> bare_steps_s=<y> ratio=<x/y>   (target ratio >= 1.3), the final loss of both
sides, whole-process wall times, and both peak RSS. Ours keeps the reference log-probs as data
(training.precompute_ref_logps): the first repeat computes them (outside train_runtime, inside its process wall
time), later repeats read them back, as a resume or a rerun would.

--model runs it on a real model folder: a chat model gets configs/smollm2-core-po.yaml's settings (core_po
prompts with the one-shot exchange, arithmetic_words add1,mul1, LoRA r16 on all projections, max_length 512,
bf16 weights: bf16 mixed precision on GPUs, bf16 weights trained directly on CPUs, on both sides), its pairs
from 6 questions (sample, score and pairs stages on the hf engine), batch 4 (the recipe's 8 peaked near 16 GB
on CPU: 16 sequences of ~450 tokens times a 49k vocabulary), 2 steps, 2 repeats unless --questions/--batch/
--steps/--repeats say otherwise; --bf16/--no-bf16 override the recipe's training.bf16.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
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

BARE = "bench_bare_dpo"


def bare_main() -> None:
    """What a user would write by hand with TRL + PEFT."""
    spec = json.loads(sys.argv[1])
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(
        spec["model"], dtype=torch.bfloat16 if spec["bf16"] else torch.float32
    )
    ds = load_dataset("parquet", data_files=spec["files"], split="train").select_columns(
        ["prompt", "chosen", "rejected"]
    )
    args = DPOConfig(
        output_dir=spec["out"],
        per_device_train_batch_size=spec["batch"],
        learning_rate=spec["lr"],
        max_steps=spec["steps"],
        beta=spec.get("beta", 0.1),
        max_length=spec["max_length"],
        save_strategy="steps",
        save_steps=spec["save_steps"],
        logging_steps=spec.get("logging_steps", 5),
        use_cpu=not torch.cuda.is_available(),
        bf16=spec["bf16"] and torch.cuda.is_available(),
        gradient_checkpointing=False,
        report_to="none",
        seed=0,
    )
    lora = LoraConfig(
        r=spec["r"],
        lora_alpha=spec["alpha"],
        lora_dropout=spec.get("dropout", 0.0),
        target_modules=spec["targets"],
        task_type="CAUSAL_LM",
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=lora)
    result = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    emit({"steps": trainer.state.global_step, "runtime": result.metrics["train_runtime"], "loss": losses[-1]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, help="default 100 (tiny model), 2 (--model)")
    ap.add_argument("--questions", type=int, help="default 64 (tiny model), 8 (--model)")
    ap.add_argument(
        "--repeats", type=int, help="runs of each side, alternating; default 3 (tiny), 2 (--model)"
    )
    ap.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        help="bf16 mixed precision (GPUs); default: off for the tiny model, the recipe's for --model",
    )
    ap.add_argument(
        "--batch", type=int, help="per-device batch size; default: the recipe's (tiny), 4 (--model)"
    )
    ap.add_argument("--model", help="a model folder (default: the tiny model); see above")
    args = ap.parse_args()
    tiny_run = args.model is None
    args.steps = args.steps or (100 if tiny_run else 2)
    args.questions = args.questions or (64 if tiny_run else 6)
    args.batch = args.batch or (None if tiny_run else 4)
    args.repeats = args.repeats or (3 if tiny_run else 2)
    if tiny_run and args.bf16 is None:
        args.bf16 = False

    from selftrain.pipeline import execute_stage
    from selftrain.recipes import load_config
    from selftrain.store import RunStore

    model, recipe = bench_model(args.model)
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    run_dir = prepare_run(
        tmp,
        [
            *model_overrides(model, recipe),
            "engine.name=hf",
            *([] if tiny_run else ["engine.isolation=inline", "training.logging_steps=1"]),
            f"data.questions_per_iteration={args.questions}",
            *([] if recipe == TINY_RECIPE else [f"data.shard_size={args.questions}"]),
            f"training.max_steps={args.steps}",
            "training.save_steps=20",
            *([] if args.bf16 is None else [f"training.bf16={str(args.bf16).lower()}"]),
            *([] if args.batch is None else [f"training.per_device_batch_size={args.batch}"]),
        ],
        recipe,
    )
    store = RunStore(run_dir)
    cfg = load_config(store.config_path)
    for stage in ("sample", "score", "pairs"):
        execute_stage(cfg, store, 0, stage)
    t = cfg.training
    pair_files = [
        str(run_dir / "iter-000" / "pairs" / s["name"]) for s in manifest(run_dir, "pairs")["shards"]
    ]

    env = {"OMP_NUM_THREADS": "2"}
    spec = {
        "model": str(model),
        "files": pair_files,
        "out": str(tmp / "bare"),
        "batch": t.per_device_batch_size,
        "lr": t.learning_rate,
        "steps": args.steps,
        "max_length": t.max_length,
        "save_steps": t.save_steps,
        "r": t.lora.r,
        "alpha": t.lora.alpha,
        "targets": t.lora.target_modules,
        "bf16": t.bf16,
        **({} if tiny_run else {"beta": t.beta, "dropout": t.lora.dropout, "logging_steps": t.logging_steps}),
    }
    ours_rates, bare_rates, ours_rss, bare_rss = [], [], 0, 0
    ours_walls, bare_walls, ours_loss, bare_loss = [], [], [], []
    for i in range(args.repeats):
        shutil.rmtree(run_dir / "iter-000" / "train", ignore_errors=True)  # a fresh train stage each time
        shutil.rmtree(tmp / "bare", ignore_errors=True)
        wall, rss, _ = run_child("selftrain.stages", str(run_dir), "0", "train", env=env)
        stats = manifest(run_dir, "train")["stats"]
        ours_rates.append(stats["steps"] / stats["train_runtime_s"])
        ours_rss = max(ours_rss, rss)
        ours_walls.append(wall)
        ours_loss.append(stats["loss"])
        ref = stats.get("reference_logps", {})
        if ref:
            how = "read back" if ref["reused"] else f"computed in {ref['seconds']:.1f}s"
            print(f"[{i}] ours: reference log-probs {how}")
        print(f"[{i}] ours: {stats['steps']} steps in {stats['train_runtime_s']:.1f}s; process {wall:.1f}s")
        wall, rss, out = run_child("bench.train", BARE, json.dumps(spec), env=env)
        bare = parse(out)
        bare_rates.append(bare["steps"] / bare["runtime"])
        bare_rss = max(bare_rss, rss)
        bare_walls.append(wall)
        bare_loss.append(bare["loss"])
        print(f"[{i}] bare: {bare['steps']} steps in {bare['runtime']:.1f}s; process {wall:.1f}s")
    ours_s, bare_s = statistics.median(ours_rates), statistics.median(bare_rates)
    print(
        f"pairs={stats['pairs']} steps={args.steps} batch={t.per_device_batch_size} device={stats['device']} "
        f"model={model} template={cfg.prompt.template} bf16={t.bf16} lora_r={t.lora.r} max_length={t.max_length}"
    )
    print(f"RESULT ours_steps_s={ours_s:.3f} bare_steps_s={bare_s:.3f} ratio={ours_s / bare_s:.3f}")
    # the final logged loss of both sides (same pairs, seed and settings); they agree within float rounding
    # when the precomputed reference log-probs equal TRL's per-step ones
    print(f"LOSS ours={ours_loss[0]:.6f} bare={bare_loss[0]:.6f} diff={abs(ours_loss[0] - bare_loss[0]):.2e}")
    # whole processes (model load, tokenisation, the one-off reference pass of the first repeat included)
    ours_w, bare_w = statistics.median(ours_walls), statistics.median(bare_walls)
    print(
        f"WALL ours_s={ours_w:.1f} bare_s={bare_w:.1f} ratio={bare_w / ours_w:.3f} first_ours_s={ours_walls[0]:.1f}"
    )
    print(f"PEAK_RSS ours_mib={ours_rss} bare_mib={bare_rss}")


if __name__ == "__main__":
    dispatch(BARE, bare_main, main)
