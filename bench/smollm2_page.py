"""The SmolLM2 study's page: docs/smollm2-study.md rendered from the cells cached in docs/smollm2-study.json
(bench/smollm2_study.py runs the cells and calls `render`)."""

from __future__ import annotations

import datetime
import os
import platform
import random
import statistics

LABELS = {"oracle_sft"}  # arms that read references to build training rows
BOOT = 1000


def bootstrap(values: list[float], rng: random.Random) -> tuple[float, float] | None:
    """95% percentile interval of the mean over resampled items."""
    if not values:
        return None
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(BOOT))
    return means[int(0.025 * BOOT)], means[int(0.975 * BOOT) - 1]


def cell_name(arm_tag: str, seed: int, iterations: int) -> str:
    """A cell's name (and its run folder's): `arm_tag` is the arm, with `-TAG` for a variant."""
    return f"study-smollm2-{arm_tag}-s{seed}-i{iterations}"


def cell_command(r: dict) -> str:
    """The command that measures this one cell again (a finished run folder is reused: delete it first)."""
    parts = [".venv/bin/python bench/smollm2_study.py", f"--arms {r['arm']}", f"--seeds {r['seed']}"]
    parts.append(f"--iterations {r.get('iterations', 1)}")  # the default is the recipe's, which has changed
    if r.get("tag"):
        parts.append(f"--tag {r['tag']}")
    parts += [f"--set {v}" for v in r.get("variant") or []]
    if r.get("samples_from"):
        parts.append(f"--samples-from {r['samples_from']}")
    if r.get("extend"):
        parts.append(f"--extend {r['extend']}")
    return " ".join(parts)


def _ci(cell: dict | None) -> str:
    if not cell or cell.get("mean") is None:
        return "-"
    lo, hi = cell["ci"]
    return f"{cell['mean']:.3f} [{lo:.2f}, {hi:.2f}]"


def _variant(r: dict) -> str:
    name = f"{r['tag']}: {', '.join(r['variant'])}" if r.get("tag") else "demo recipe"
    note = f"; {r['note']}" if r.get("note") else ""
    if r.get("fast_top_p"):  # sampling 1.49x faster, the same samples (bench/top_p.py)
        note += "; engine.fast_top_p"
    if r.get("in_process"):  # engine starts ~15 s faster, the same samples (bench/engine_start.py)
        note += "; engine.in_process"
    # the source cells are named without their seed, so that one variant's seeds share a summary row
    if r.get("samples_from"):
        note += f"; iteration-0 samples copied from the same seed's {r['samples_from']} cell (wall time without sampling)"
    if r.get("extend"):
        note += f"; first iterations copied from the same seed's {r['extend']}-iteration cell (wall time: both runs')"
    return f"{name} [{r.get('dtype', 'bfloat16')}, {r.get('cpu', '?')}{note}]"


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


# (arm, baseline arm): the paired differences section 4 reports, when both cells of a seed exist
PAIRED = (("sc_sft", "random_sft"), ("oracle_sft", "sc_sft"), ("sc_dpo", "sc_sft"))


def paired_lines(results: dict, rng: random.Random) -> list[str]:
    """Arm minus arm on the same held-out questions, same seed, same variant and iterations: a paired
    bootstrap over questions of the last iteration's per-question correctness."""
    cells = {(r["arm"], r.get("tag", ""), r["seed"], r.get("iterations", 1)): r for r in results.values()}
    lines = [
        "## 4. Arms compared on the same questions (paired, last iteration)",
        "",
        "| comparison | variant | seed | source | difference [95% CI] | n |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (arm, tag, seed, its), r in sorted(cells.items()):
        for b in (b for a, b in PAIRED if a == arm):
            other = cells.get((b, tag, seed, its))
            if other is None:
                continue
            for src, by_it in r["evaluation"].items():
                mine = list(by_it.values())[-1]
                theirs = (list(other["evaluation"].get(src, {}).values()) or [{}])[-1]
                # cells recorded before per-question rows were kept, or on other questions, do not pair
                if "correct" not in mine or "correct" not in theirs or mine["ids"] != theirs["ids"]:
                    continue
                diffs = [float(x) - float(y) for x, y in zip(mine["correct"], theirs["correct"], strict=True)]
                lo, hi = bootstrap(diffs, rng) or (0.0, 0.0)
                lines.append(
                    f"| {arm} − {b} | {tag or 'demo recipe'} | {seed} | {src} "
                    f"| {sum(diffs) / len(diffs):+.3f} [{lo:+.2f}, {hi:+.2f}] | {len(diffs)} |"
                )
    if len(lines) == 4:
        lines.append("| (no seed has both cells of a comparison with per-question rows yet) | | | | | |")
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
        "| cell | task | questions | sample acc | pass@k | majority | the arm's judge: within-question AUROC (n) |",
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
        "The AUROC column is the cell's own judge's score: self-consistency in the sc_* cells, the label in "
        "oracle cells, chance in random cells. Every judge scores a truncated sample 0, and truncated samples are "
        "mostly wrong, so even the random judge's AUROC is above 0.5 (finishing is itself a signal) and the "
        "oracle's is below 1 (a right but truncated sample scores 0).",
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
    lines += ["", *paired_lines(results, random.Random("paired"))]
    return "\n".join(lines) + "\n"
