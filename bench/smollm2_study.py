"""The SmolLM2 study: does label-free self-training make a real pretrained model better, and which judge finds it?

    .venv/bin/python bench/smollm2_study.py [--arms sc_sft,sc_dpo,oracle_sft,random_sft] [--seeds 0,1,2]
        [--iterations 1] [--recipe configs/smollm2-demo.yaml] [--set key=value ...] [--docs docs/smollm2-study.md]

Every cell is a real selftrain run (no Prefect) of the demo recipe (SmolLM2-135M-Instruct, single-digit
addition and multiplication in words) with one arm's overrides:
  sc_sft      the demo: self-consistency, SFT on the majority-answer samples (share >= 0.5)
  sc_dpo      self-consistency, DPO on majority vs minority samples
  oracle_sft  USES THE LABELS (the upper bound, not self-training): SFT on the right samples
  random_sft  control (the floor): SFT on 4 random samples per question
The script reads each run's store and writes one markdown page (machine, date, threads, the command):
  1. what the base model's samples show, per task, from iteration 0's samples (the references are read here,
     as a diagnostic only): sample accuracy, pass@8, majority-vote accuracy, and the self-consistency judge's
     within-question AUROC, each with a bootstrap 95% interval over questions;
  2. per arm and seed, held-out greedy accuracy of the base and of each iteration on every evaluation source,
     the gain with a paired bootstrap 95% interval, and the run's wall time.
`--tag NAME --set key=value` runs a variant of every arm (its cells are named ...-NAME-s<seed>-i<iterations> and
the page shows the tag and its overrides). Results are cached in docs/smollm2-study.json (one entry per cell,
tracked, so the page survives a fresh checkout), so cells can be run one at a time and the page always shows
every cell measured so far. A finished run folder is reused, not rerun.
"""

from __future__ import annotations

import argparse
import datetime
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
LABELS = {"oracle_sft"}  # arms that read references to build training rows
BOOT = 1000


def bootstrap(values: list[float], rng: random.Random) -> tuple[float, float] | None:
    """95% percentile interval of the mean over resampled items."""
    if not values:
        return None
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(BOOT))
    return means[int(0.025 * BOOT)], means[int(0.975 * BOOT) - 1]


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


def cell_name(arm_tag: str, seed: int, iterations: int) -> str:
    """A cell's name (and its run folder's): `arm_tag` is the arm, with `-TAG` for a variant."""
    return f"study-smollm2-{arm_tag}-s{seed}-i{iterations}"


def copy_samples(source: Path, run_dir: Path) -> None:
    """Seed a new cell's run folder with another cell's iteration-0 questions and samples (their manifests
    included): the run finds them complete when their fingerprints match, and samples nothing again."""
    import shutil

    if not (source / "iter-000" / "sample" / ".manifest.json").exists():
        raise SystemExit(f"--samples-from: {source} has no finished iteration-0 sample stage")
    for stage in ("questions", "sample"):
        shutil.copytree(source / "iter-000" / stage, run_dir / "iter-000" / stage)


def cell_command(r: dict) -> str:
    """The command that measures this one cell again (a finished run folder is reused: delete it first)."""
    parts = [".venv/bin/python bench/smollm2_study.py", f"--arms {r['arm']}", f"--seeds {r['seed']}"]
    if r.get("iterations", 1) != 1:
        parts.append(f"--iterations {r['iterations']}")
    if r.get("tag"):
        parts.append(f"--tag {r['tag']}")
    parts += [f"--set {v}" for v in r.get("variant") or []]
    if r.get("samples_from"):
        parts.append(f"--samples-from {r['samples_from']}")
    return " ".join(parts)


def _ci(cell: dict | None) -> str:
    if not cell or cell.get("mean") is None:
        return "-"
    lo, hi = cell["ci"]
    return f"{cell['mean']:.3f} [{lo:.2f}, {hi:.2f}]"


def _variant(r: dict) -> str:
    name = f"{r['tag']}: {', '.join(r['variant'])}" if r.get("tag") else "demo recipe"
    note = f"; {r['note']}" if r.get("note") else ""
    if r.get("samples_from"):
        source = cell_name(r["samples_from"], r["seed"], r.get("iterations", 1))
        note += f"; samples copied from {source} (wall time without sampling)"
    return f"{name} [{r.get('dtype', 'bfloat16')}, {r.get('cpu', '?')}{note}]"


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


def summary_lines(results: dict) -> list[str]:
    """Per arm and variant: the last iteration's gain on every source over the seeds measured, and wall."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results.values():
        groups.setdefault((r["arm"], _variant(r)), []).append(r)
    lines = [
        "## Summary: the last iteration's held-out gain over the seeds measured",
        "",
        "| arm | variant | seeds | source: gain per seed (mean) | wall per run |",
        "| --- | --- | --- | --- | --- |",
    ]
    for (arm, variant), cells in sorted(groups.items()):
        cells.sort(key=lambda r: r["seed"])
        sources: dict[str, list[str]] = {}
        means: dict[str, list[float]] = {}
        for r in cells:
            for src, its in r["evaluation"].items():
                last = list(its.values())[-1]
                sources.setdefault(src, []).append(f"{last['gain']:+.3f}")
                means.setdefault(src, []).append(last["gain"])
        gains = "; ".join(
            f"{src}: {', '.join(v)} ({statistics.mean(means[src]):+.3f})" for src, v in sources.items()
        )
        walls = [r["wall_s"] / 60 for r in cells]
        mark = " (uses labels)" if arm in LABELS else ""
        lines.append(
            f"| {arm}{mark} | {variant} | {', '.join(str(r['seed']) for r in cells)} | {gains} "
            f"| {min(walls):.1f}-{max(walls):.1f} min |"
        )
    return lines + [""]


def render(results: dict, command: str) -> str:
    threads = os.environ.get("OMP_NUM_THREADS", "torch default")
    lines = [
        "# The SmolLM2 study (generated by bench/smollm2_study.py: do not edit by hand)",
        "",
        f"Last written by: `{command}`; every cell's own command is in section 3 (the page shows every cell in "
        f"docs/smollm2-study.json). Machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"OMP_NUM_THREADS={threads}; page written {datetime.date.today().isoformat()}. Each cell's own date "
        "and wall time are in its row. Intervals are bootstrap 95% over questions (paired for gains).",
        "",
        *summary_lines(results),
        "## 1. The base model's samples (iteration 0, training split; references read as a diagnostic only)",
        "",
        "| cell | task | questions | sample acc | pass@k | majority | SC within-question AUROC (n) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, r in sorted(results.items()):
        for task, d in r["samples"].items():
            lines.append(
                f"| {key} | {task} | {d['questions']} | {_ci(d['sample'])} | {_ci(d['pass_at_k'])} (k {d['k']}) "
                f"| {_ci(d['majority'])} | {_ci(d['auroc'])} ({d['auroc']['n']}) |"
            )
    lines += [
        "",
        "Only the sc_* cells' AUROC is the self-consistency judge's; oracle and random cells score by label "
        "and by chance.",
        "",
        "## 2. Held-out greedy accuracy after self-training",
        "",
        "| arm | variant | seed | source | base | iteration: policy (gain [95% CI]) | median answer chars "
        "(base -> last) | wall | date |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for _key, r in sorted(results.items()):
        mark = " (uses labels)" if r["arm"] in LABELS else ""
        for src, its in r["evaluation"].items():
            first = next(iter(its.values()))
            cells = "; ".join(
                f"{it}: {c['policy']:.3f} ({c['gain']:+.3f} [{c['gain_ci'][0]:+.2f}, {c['gain_ci'][1]:+.2f}])"
                for it, c in its.items()
            )
            last = list(its.values())[-1]
            chars = (
                f"{first['base_chars']:.0f} -> {last['policy_chars']:.0f}" if "base_chars" in first else "-"
            )
            lines.append(
                f"| {r['arm']}{mark} | {_variant(r)} | {r['seed']} | {src} (n {first['n']}) | {first['base']:.3f} "
                f"| {cells} | {chars} | {r['wall_s'] / 60:.1f} min | {r['date']} |"
            )
    lines += ["", "## 3. Each cell's command and where its time went", ""]
    lines += ["| cell | command | seconds per stage |", "| --- | --- | --- |"]
    for key, r in sorted(results.items()):
        stages = ", ".join(f"{k} {v:.0f}" for k, v in (r.get("stage_s") or {}).items()) or "-"
        lines.append(f"| {key} | `{cell_command(r)}` | {stages} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arms", default="sc_sft,sc_dpo,oracle_sft,random_sft")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--iterations", type=int, default=1)
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
    for seed in seeds:
        for arm in args.arms.split(","):
            tag = f"-{args.tag}" if args.tag else ""
            name = cell_name(f"{arm}{tag}", seed, args.iterations)
            overrides = [f"run.name={name}", f"run.seed={seed}", f"run.iterations={args.iterations}"]
            cfg = load_config(args.recipe, overrides + ARMS[arm] + args.set)
            if args.samples_from and not cfg.run_dir().exists():
                source = cell_name(args.samples_from, seed, args.iterations)
                copy_samples(cfg.run_dir().parent / source, cfg.run_dir())
            start = time.time()
            store = run(cfg)
            wall = time.time() - start
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
                "dtype": cfg.model.dtype,
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
