"""The toy study: which judge and which loss make label-free self-training raise held-out accuracy?

    .venv/bin/python bench/toy_study.py [--judges core_po,self_consistency,oracle,random] [--losses sft,rpo,dpo]
        [--seeds 0,1] [--iterations 3] [--questions 300] [--recipe configs/tiny-digits.yaml] [--set key=value ...]

Every cell is a real selftrain run (no Prefect) of the recipe on the same cached base model, with:
  judge  core_po          the model's own P(True) (CORE-PO); SFT keeps each question's top half by score
         self_consistency SC: score = share of samples with the same answer; SFT keeps share >= 0.5
         oracle           USES THE LABELS (an upper bound, not self-training): score 1 if correct
         random           control: random scores, i.e. randomly chosen samples
  loss   sft (chosen_only rows), rpo / dpo (pairs: majority_vs_minority for SC, best_vs_rest otherwise)
and prints one table: hard/easy greedy accuracy of the base and after each iteration, the judge's AUROC within
question (mean over questions with both right and wrong samples) and the share of chosen samples that are
correct, per iteration. Runs land in <store>/runs/study-<judge>-<loss>-s<seed>; a finished cell is reused.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CELL_OVERRIDES = {
    ("core_po", "sft"): [
        "pairs.builder=chosen_only",
        "pairs.min_chosen_score=0.0",
        "pairs.max_per_question=4",
    ],
    ("self_consistency", "sft"): ["pairs.builder=chosen_only", "pairs.min_chosen_score=0.5"],
    ("oracle", "sft"): ["pairs.builder=chosen_only", "pairs.min_chosen_score=0.5"],
    ("random", "sft"): [
        "pairs.builder=chosen_only",
        "pairs.min_chosen_score=0.0",
        "pairs.max_per_question=4",
    ],
}
PAIR_BUILDER = {"self_consistency": "majority_vs_minority"}
# DPO/RPO on LoRA: a gentler step than SFT's (TOY-STUDIES.md: lr 1e-4 beta 0.1 fell 12 points with full weights)
PREFERENCE = ["training.learning_rate=2e-4", "training.beta=0.5", "training.rpo_alpha=1.0"]


def overrides_for(judge: str, loss: str, seed: int, iterations: int, questions: int) -> list[str]:
    cell = CELL_OVERRIDES.get((judge, loss))
    if cell is None:  # dpo / rpo
        builder = PAIR_BUILDER.get(judge, "best_vs_rest")
        cell = [f"pairs.builder={builder}", "pairs.min_chosen_score=0.0", "pairs.max_per_question=0"]
        cell += PREFERENCE
    return [
        f"run.name=study-{judge}-{loss}-s{seed}",
        f"run.seed={seed}",
        f"run.iterations={iterations}",
        f"data.questions_per_iteration={questions}",
        f"judge.name={judge}",
        f"training.loss={loss}",
        *cell,
    ]


def chosen_precision(store, iteration: int) -> float | None:  # noqa: ANN001
    """Share of the rows' chosen samples whose answer is right (diagnostic: reads the references)."""
    from selftrain.grading import grade
    from selftrain.store import read_stage

    questions = {r["question_id"]: r for r in read_stage(store.stage_dir(iteration, "questions")).to_pylist()}
    rows = read_stage(store.stage_dir(iteration, "pairs")).to_pylist()
    if not rows:
        return None
    ok = 0
    for r in rows:
        q = questions[r["question_id"]]
        ok += bool(grade(q["task"], r["chosen"], q["reference"], q["choices"])[1])
    return ok / len(rows)


def cell_result(store) -> dict:  # noqa: ANN001
    from selftrain.runner import accuracy_table

    acc = {(it, m, src): a for it, m, src, a, *_ in accuracy_table(store)}
    out: dict = {"iterations": []}
    for it in store.iterations_on_disk():
        score = store.manifest(it, "score")
        pairs = store.manifest(it, "pairs")
        out["iterations"].append(
            {
                "iteration": it,
                "hard": acc.get((it, "policy", "digit_sums_hard")),
                "easy": acc.get((it, "policy", "digit_sums_easy")),
                "auroc_within": score.stats.get("judge_auroc_within") if score else None,
                "sample_accuracy": score.stats.get("sample_accuracy") if score else None,
                "rows": pairs.stats.get("pairs") if pairs else None,
                "chosen_correct": chosen_precision(store, it) if pairs else None,
            }
        )
    out["base_hard"] = acc.get((0, "base", "digit_sums_hard"))
    out["base_easy"] = acc.get((0, "base", "digit_sums_easy"))
    return out


def fmt(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "  -  "
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def print_table(results: list[dict]) -> None:
    print()
    print(
        "judge             loss  seed  base hard/easy  | per iteration: hard / easy (AUROC within, chosen right)"
        " | final hard-base, easy-base"
    )
    for r in results:
        its = "  ".join(
            f"{fmt(i['hard'])}/{fmt(i['easy'])} ({fmt(i['auroc_within'])}, {fmt(i['chosen_correct'])})"
            for i in r["iterations"]
        )
        last = r["iterations"][-1] if r["iterations"] else {}
        dh = None if last.get("hard") is None else last["hard"] - r["base_hard"]
        de = None if last.get("easy") is None else last["easy"] - r["base_easy"]
        mark = " [uses labels]" if r["judge"] == "oracle" else ""
        print(
            f"{r['judge']:<17} {r['loss']:<4}  {r['seed']:>4}  {fmt(r['base_hard'])}/{fmt(r['base_easy'])}"
            f"  | {its} | {fmt(dh, True)}, {fmt(de, True)}{mark}"
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--judges", default="core_po,self_consistency,oracle,random")
    p.add_argument("--losses", default="sft,rpo,dpo")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--questions", type=int, default=300)
    p.add_argument("--recipe", default=str(ROOT / "configs" / "tiny-digits.yaml"))
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="extra override, every cell"
    )
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()

    from selftrain.logs import setup_logging
    from selftrain.recipes import load_config
    from selftrain.runner import run

    setup_logging(False)
    logging.getLogger("selftrain").setLevel(logging.WARNING)
    results = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for judge in args.judges.split(","):
            for loss in args.losses.split(","):
                overrides = overrides_for(judge, loss, seed, args.iterations, args.questions) + args.set
                cfg = load_config(args.recipe, overrides)
                start = time.time()
                store = run(cfg)
                r = {"judge": judge, "loss": loss, "seed": seed, **cell_result(store)}
                r["wall_s"] = round(time.time() - start, 1)
                results.append(r)
                print(f"done {judge} {loss} seed {seed} in {r['wall_s']}s: {json.dumps(r)}", flush=True)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
