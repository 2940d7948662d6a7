"""The SmolLM2 study: does label-free self-training make a real pretrained model better, and which judge finds it?

    .venv/bin/python bench/smollm2_study.py [--arms sc_sft,sc_dpo,oracle_sft,random_sft] [--seeds 0,1,2]
        [--iterations N] [--recipe configs/smollm2-demo.yaml] [--set key=value ...] [--docs docs/smollm2-study.md]

Every cell is a real selftrain run (no Prefect) of the demo recipe (SmolLM2-135M-Instruct, single-digit
addition and multiplication in words) with one arm's overrides:
  sc_sft      the demo: self-consistency, SFT on the majority-answer samples (share >= 0.5)
  sc_dpo      self-consistency, DPO on majority vs minority samples
  oracle_sft  USES THE LABELS (the upper bound, not self-training): SFT on the right samples
  random_sft  control (the floor): SFT on 4 random samples per question
The script reads each run's store and writes one markdown page (machine, date, threads, the command):
  1. what the base model's samples show, per task, from iteration 0's samples (the references are read here,
     as a diagnostic only): sample accuracy, pass@8, majority-vote accuracy, and the cell's judge's
     within-question AUROC, each with a bootstrap 95% interval over questions;
  2. per arm and seed, held-out greedy accuracy of the base and of each iteration on every evaluation source,
     the gain with a paired bootstrap 95% interval, and the run's wall time;
  3. each cell's command and seconds per stage;
  4. arm minus arm on the same held-out questions and seed (paired bootstrap), e.g. sc_sft - random_sft.
`--samples-from ARM` starts a cell from that arm's iteration-0 samples of the same seed; `--iterations 2 --extend 1`
computes only the second iteration of a finished one-iteration cell. bench/smollm2_page.py renders the page.
`--tag NAME --set key=value` runs a variant of every arm (its cells are named ...-NAME-s<seed>-i<iterations> and
the page shows the tag and its overrides). Results are cached in docs/smollm2-study.json (one entry per cell,
tracked, so the page survives a fresh checkout), so cells can be run one at a time and the page always shows
every cell measured so far. A finished run folder is reused, not rerun.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.smollm2_page import bootstrap, cell_name, render  # noqa: E402

ARMS = {
    "sc_sft": [],
    "sc_dpo": [
        "pairs.builder=majority_vs_minority",
        "pairs.min_chosen_score=0.0",
        "training.loss=dpo",
        "training.beta=0.1",
        "training.learning_rate=5e-5",
    ],
    "oracle_sft": ["judge.name=oracle", "pairs.min_chosen_score=0.5"],
    "random_sft": ["judge.name=random", "pairs.min_chosen_score=0.0", "pairs.max_per_question=4"],
}


def _groups(store, iteration: int) -> dict[str, list[tuple[str, list[bool], list[float]]]]:  # noqa: ANN001
    """task -> [(question_id, per-sample correct, per-sample judge score)] for one iteration's samples."""
    from selftrain.grading import grade
    from selftrain.store import read_stage

    questions = {r["question_id"]: r for r in read_stage(store.stage_dir(iteration, "questions")).to_pylist()}
    scores = {
        (r["question_id"], r["sample_index"]): r["score"]
        for r in read_stage(store.stage_dir(iteration, "score")).to_pylist()
    }
    by_q: dict[str, list[tuple[bool, float | None, str | None]]] = {}
    for s in read_stage(store.stage_dir(iteration, "sample")).to_pylist():
        q = questions[s["question_id"]]
        answer, ok = grade(q["task"], s["completion"], q["reference"], q["choices"])
        by_q.setdefault(s["question_id"], []).append(
            (ok, scores.get((s["question_id"], s["sample_index"])), answer)
        )
    out: dict[str, list] = {}
    for qid, samples in by_q.items():
        task = json.loads(questions[qid]["meta"] or "{}").get("subset", "all")
        out.setdefault(task, []).append((qid, samples))
    return out


def sample_diagnostics(store, iteration: int, rng: random.Random) -> dict:  # noqa: ANN001
    from selftrain.diagnostics import auroc

    out = {}
    for task, items in sorted(_groups(store, iteration).items()):
        acc, pass_k, majority, within = [], [], [], []
        for _, samples in items:
            oks = [ok for ok, _, _ in samples]
            acc.append(sum(oks) / len(oks))
            pass_k.append(float(any(oks)))
            votes: dict[str, int] = {}
            for _, _, answer in samples:
                if answer is not None:
                    votes[answer] = votes.get(answer, 0) + 1
            top = max(votes, key=votes.get) if votes else None
            majority.append(float(any(ok and a == top for ok, _, a in samples)))
            value = auroc([s if s is not None else 0.0 for _, s, _ in samples], oks)
            if value is not None:
                within.append(value)
        out[task] = {
            "questions": len(items),
            "k": len(items[0][1]),
            **{
                name: {"mean": sum(v) / len(v) if v else None, "ci": bootstrap(v, rng), "n": len(v)}
                for name, v in (
                    ("sample", acc),
                    ("pass_at_k", pass_k),
                    ("majority", majority),
                    ("auroc", within),
                )
            },
        }
    return out


def evaluation(store, rng: random.Random) -> dict:  # noqa: ANN001
    """source -> iteration -> {base, policy, gain, gain_ci, n} from the greedy evaluation rows."""
    from selftrain.store import read_stage

    out: dict = {}
    base: dict[str, dict[str, bool]] = {}
    base_chars: dict[str, list[int]] = {}
    for it in store.iterations_on_disk():
        if store.manifest(it, "evaluate") is None:
            continue
        rows = [
            r for r in read_stage(store.stage_dir(it, "evaluate")).to_pylist() if r["decoding"] == "greedy"
        ]
        policy: dict[str, dict[str, bool]] = {}
        chars: dict[str, list[int]] = {}
        for r in rows:
            target = base if r["model"] == "base" else policy
            target.setdefault(r["source"], {})[r["question_id"]] = bool(r["correct"])
            (base_chars if r["model"] == "base" else chars).setdefault(r["source"], []).append(
                len(r["completion"])
            )
        for src, got in policy.items():
            ref = base.get(src, {})
            ids = sorted(set(got) & set(ref))
            diffs = [float(got[i]) - float(ref[i]) for i in ids]
            out.setdefault(src, {})[str(it)] = {
                "base": sum(ref.values()) / len(ref) if ref else None,
                "policy": sum(got.values()) / len(got),
                "gain": sum(diffs) / len(diffs) if diffs else None,
                "gain_ci": bootstrap(diffs, rng),
                "n": len(got),
                # answer length: the base model states the result and keeps writing; the grader reads the
                # last number, so a shorter answer alone can raise accuracy
                "base_chars": statistics.median(base_chars.get(src) or [0]),
                "policy_chars": statistics.median(chars[src]),
                # per question, in sorted question-id order: arms of the same seed compare paired (section 4)
                "correct": "".join("1" if got[i] else "0" for i in ids),
                "ids": hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16],
            }
    return out


def stage_seconds(store) -> dict[str, float]:  # noqa: ANN001
    """stage -> wall seconds summed over iterations, from the manifests' start and finish times."""
    out: dict[str, float] = {}
    for it in store.iterations_on_disk():
        for stage in ("questions", "sample", "score", "pairs", "train", "evaluate"):
            m = store.manifest(it, stage)
            if m is None or not m.started_at or not m.finished_at:
                continue
            took = datetime.datetime.fromisoformat(m.finished_at) - datetime.datetime.fromisoformat(
                m.started_at
            )
            out[stage] = round(out.get(stage, 0.0) + took.total_seconds(), 1)
    return out


def copy_samples(source: Path, run_dir: Path) -> None:
    """Seed a new cell's run folder with another cell's iteration-0 questions and samples (their manifests
    included): the run finds them complete when their fingerprints match, and samples nothing again."""
    import shutil

    if not (source / "iter-000" / "sample" / ".manifest.json").exists():
        raise SystemExit(f"--samples-from: {source} has no finished iteration-0 sample stage")
    for stage in ("questions", "sample"):
        shutil.copytree(source / "iter-000" / stage, run_dir / "iter-000" / stage)


def copy_iterations(source: Path, run_dir: Path) -> None:
    """Seed a longer cell's run folder with a shorter cell's finished iterations (same arm, variant and seed):
    sampling and training are seeded, so its iterations are the ones this cell would compute, and a stage
    whose fingerprint differs is redone by the run anyway."""
    import shutil

    its = sorted(p for p in source.glob("iter-*") if (p / "evaluate" / ".manifest.json").exists())
    if not its:
        raise SystemExit(f"--extend: {source} has no finished iteration")
    for it in its:
        shutil.copytree(it, run_dir / it.name)


def cpu_name() -> str:
    """The CPU model and whether it has native bf16 kernels: bf16 vs float32 speed and results depend on it."""
    from selftrain.cpufeatures import native_bf16

    model = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines() if line.startswith("model name")),
        platform.machine(),
    )
    return f"{model}, {os.cpu_count()} cores, {'bf16' if native_bf16() else 'no bf16'} kernels"


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def engine_in_process(cfg) -> bool:  # noqa: ANN001
    """Whether the cell's vLLM engines ran in the stage process (engine.in_process)."""
    if cfg.engine.name == "hf":
        return False
    from selftrain.engines.vllm_engine import _on_cpu, wants_in_process

    return wants_in_process(cfg, _on_cpu())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arms", default="sc_sft,sc_dpo,oracle_sft,random_sft")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="iterations per cell (default: the recipe's run.iterations)",
    )
    p.add_argument("--recipe", default=str(ROOT / "configs" / "smollm2-demo.yaml"))
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="extra override, every cell"
    )
    p.add_argument("--tag", default="", help="variant name for --set overrides (part of every cell's name)")
    p.add_argument("--cache", default=str(ROOT / "docs" / "smollm2-study.json"))
    p.add_argument("--docs", default=str(ROOT / "docs" / "smollm2-study.md"))
    p.add_argument("--render-only", action="store_true", help="rewrite the page from the cache, run nothing")
    p.add_argument(
        "--samples-from",
        metavar="ARM[-TAG]",
        help="start each new cell from the iteration-0 questions and samples of this arm's cell of the same "
        "seed (e.g. sc_sft): sampling is seeded and arms do not change it, so the samples are the ones the "
        "cell would draw; its wall time then leaves sampling out (the page says so)",
    )
    p.add_argument(
        "--extend",
        type=int,
        metavar="ITERATIONS",
        help="start each new cell from the finished iterations of the same cell run with ITERATIONS iterations "
        "(e.g. --iterations 2 --extend 1): only the new iterations are computed; the wall time recorded is "
        "the shorter cell's plus this run's",
    )
    args = p.parse_args()
    unknown = sorted(set(args.arms.split(",")) - set(ARMS))
    if unknown:
        p.error(f"unknown arm(s) {', '.join(unknown)}; known: {', '.join(ARMS)}")

    from selftrain.fileio import atomic_write_text
    from selftrain.logs import setup_logging
    from selftrain.recipes import load_config
    from selftrain.runner import run

    setup_logging(False)
    cache = Path(args.cache)
    results = json.loads(cache.read_text()) if cache.exists() else {}
    seeds = [] if args.render_only else [int(s) for s in args.seeds.split(",")]
    if args.iterations is None:
        args.iterations = load_config(args.recipe, args.set).run.iterations
    for seed in seeds:
        for arm in args.arms.split(","):
            tag = f"-{args.tag}" if args.tag else ""
            name = cell_name(f"{arm}{tag}", seed, args.iterations)
            overrides = [f"run.name={name}", f"run.seed={seed}", f"run.iterations={args.iterations}"]
            cfg = load_config(args.recipe, overrides + ARMS[arm] + args.set)
            if args.samples_from and not cfg.run_dir().exists():
                source = cell_name(args.samples_from, seed, args.iterations)
                copy_samples(cfg.run_dir().parent / source, cfg.run_dir())
            extended = None
            if args.extend and not cfg.run_dir().exists():
                extended = cell_name(f"{arm}{tag}", seed, args.extend)
                copy_iterations(cfg.run_dir().parent / extended, cfg.run_dir())
            start = time.time()
            store = run(cfg)
            wall = time.time() - start
            if extended:
                wall += results[extended]["wall_s"]
            rng = random.Random(f"{name}-bootstrap")
            previous = results.get(name, {})
            results[name] = {
                "arm": arm,
                "seed": seed,
                "overrides": ARMS[arm] + args.set,
                "tag": args.tag,
                "variant": args.set,
                # a reused run takes seconds: keep the wall time of the run that did the work
                "wall_s": wall if wall > 60 or "wall_s" not in previous else previous["wall_s"],
                "date": previous.get("date")
                if wall <= 60 and previous
                else datetime.date.today().isoformat(),
                "iterations": args.iterations,
                **({"samples_from": args.samples_from} if args.samples_from else {}),
                **({"extend": args.extend} if extended else {}),
                "dtype": cfg.model.dtype,
                "fast_top_p": cfg.engine.fast_top_p and cfg.engine.name != "hf",
                "in_process": engine_in_process(cfg),
                "cpu": cpu_name(),
                "stage_s": stage_seconds(store),
                "samples": sample_diagnostics(store, 0, rng),
                "evaluation": evaluation(store, rng),
            }
            cache.parent.mkdir(parents=True, exist_ok=True)
            # other study processes may have added cells since this one started: keep theirs
            on_disk = json.loads(cache.read_text()) if cache.exists() else {}
            results = {**on_disk, name: results[name]}
            atomic_write_text(cache, json.dumps(results, indent=2))
            logging.getLogger("study").warning("cell %s done in %.0fs", name, wall)
    command = ".venv/bin/python bench/smollm2_study.py " + " ".join(sys.argv[1:])
    Path(args.docs).write_text(render(results, command.strip()))
    print(f"wrote {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
