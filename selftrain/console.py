"""The text and JSON tables `selftrain run` and `selftrain status` print (the CLI writes them out)."""

from __future__ import annotations

from selftrain.config import Config
from selftrain.leases import lease_status
from selftrain.methods import method_of
from selftrain.plan import method_stages, stage_state
from selftrain.runner import accuracy_table, judge_table
from selftrain.store import RunStore


def accuracy_lines(rows: list) -> list[str]:
    """accuracy_table's rows, one line each under a header; best-of-K in a column where the run has it."""
    if not rows:
        return []
    out: list[str] = []
    # best-of-K accuracy (evaluation.best_of) in a column beside greedy, only when a run has it
    k = next((r[5] for r in rows if r[5]), None)
    best = f"  {f'best-of-{k}':>9}" if k else ""
    out.append(f"{'iteration':>9}  {'model':<6}  {'source':<22} {'accuracy':>8}{best}  {'n':>5}")
    for it, model, src, accuracy, n, _, best_acc in rows:
        best = f"  {'-' if best_acc is None else f'{best_acc:.3f}':>9}" if k else ""
        out.append(f"{it:>9}  {model:<6}  {src:<22} {accuracy:>8.3f}{best}  {n:>5}")
    return out


def judge_lines(rows: list) -> list[str]:
    """runner.judge_table's rows: the judge's quality per iteration (on the training questions' samples, graded
    against their references where they have them; diagnostic only, nothing trains on it)."""
    if not rows:
        return []

    def cell(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    out = [
        "",
        f"{'iteration':>9}  {'judge agreement':>15}  {'ties':>6}  {'AUROC within':>12}  {'unparsable':>10}"
        f"  {'parsed samples':>14}",
    ]
    for it, st in rows:
        out.append(
            f"{it:>9}  {cell(st['judge_pair_agreement']):>15}  {cell(st['judge_pair_ties']):>6}  "
            f"{cell(st['judge_auroc_within']):>12}  {cell(st['unparsable_rate']):>10}"
            f"  {cell(st.get('parse_rate')):>14}"
        )
    return out


def by_iteration_lines(rows: list) -> list[str]:
    """One line per evaluated model: each eval source's accuracy and its change from the base model."""
    if not rows:
        return []
    out: list[str] = []
    # rows: (iteration, model, source, accuracy, n, ...best-of columns)
    sources = list(dict.fromkeys(row[2] for row in rows))
    cells = {(row[0], row[1], row[2]): row[3] for row in rows}
    base = {src: cells.get((0, "base", src)) for src in sources}
    out.append("")  # a blank line after the table above
    out.append(f"{'iteration':>9}  {'model':<6}  " + "  ".join(f"{s:>24}" for s in sources))
    for it, m in dict.fromkeys((row[0], row[1]) for row in rows):
        parts = []
        for src in sources:
            acc = cells.get((it, m, src))
            if acc is None:
                parts.append(f"{'-':>24}")
                continue
            delta = "" if m == "base" or base[src] is None else f" ({acc - base[src]:+.3f} vs base)"
            parts.append(f"{f'{acc:.3f}{delta}':>24}")
        out.append(f"{it:>9}  {m:<6}  " + "  ".join(parts))
    return out


def method_report_lines(store: RunStore) -> list[str]:
    """The run's method's own report (Method.report), from its stages' manifests (none for most methods), then
    the recipe's `run.expect` line: the range it measured, printed beside the result."""
    import importlib

    import yaml

    config = yaml.safe_load(store.config_path.read_text()) if store.config_path.exists() else None
    config = config if isinstance(config, dict) else {}
    target = method_of(config).report
    expect = (config.get("run") or {}).get("expect")
    lines = [f"expected (run.expect): {expect}"] if expect else []
    if not target:
        return lines
    module, func = target.split(":")
    return [*getattr(importlib.import_module(module), func)(store), *lines]


def shard_progress(store: RunStore, iteration: int, stage: str, ttl_s: float) -> dict | None:
    """A data-parallel stage being worked: shards done / claimed / free and who holds each live claim."""

    total, done, claims = lease_status(store.stage_dir(iteration, stage), ttl_s)
    if total is None:
        return None
    live = [c for c in claims if c.live]
    return {
        "total": total,
        "done": done,
        "claimed": len(live),
        "free": total - done - len(live),
        "claims": [
            {"shard": c.index, "host": c.host, "pid": c.pid, "age_s": round(c.age_s, 1), "live": c.live}
            for c in claims
        ],
    }


def shard_lines(progress: dict) -> list[str]:
    """`status` lines of shard_progress: the counts, then one line per claim."""
    p = progress
    lines = [f"shards: {p['done']} done, {p['claimed']} claimed, {p['free']} free (of {p['total']})"]
    for c in p["claims"]:
        state = (
            f"renewed {c['age_s']:.0f}s ago" if c["live"] else f"expired ({c['age_s']:.0f}s), free to take"
        )
        lines.append(f"    part-{c['shard']:05d}: {c['host']} pid {c['pid']}, {state}")
    return lines


def status_json(cfg: Config, store: RunStore, iterations: list[int]) -> dict:
    """`status --json`: the run state (stage statuses, with reasons) and the evaluation rows."""
    state = []
    for it in iterations:
        stages = {}
        for stage in method_stages(cfg):
            st = stage_state(cfg, store, it, stage)
            stages[stage] = {"status": st.status, **({"reasons": st.reasons} if st.reasons else {})}
            if st.status in ("partial", "failed"):
                progress = shard_progress(store, it, stage, cfg.store.lease_seconds)
                if progress:
                    stages[stage]["shards"] = progress
        state.append({"iteration": it, "stages": stages})
    return {
        "run": str(store.run_dir),
        "iterations_configured": cfg.run.iterations,
        "seed": cfg.run.seed,
        "state": state,
        "eval": [eval_row(row) for row in accuracy_table(store)],
        "judge": [{"iteration": it, **st} for it, st in judge_table(store)],
    }


def eval_row(row: tuple) -> dict:
    """An accuracy_table row as JSON: greedy accuracy, plus best-of-K where the run evaluated it."""
    it, m, src, acc, n, *best = row
    out = {"iteration": it, "model": m, "source": src, "accuracy": acc, "n": n}
    if best and best[0]:
        out.update(best_of_k=best[0], best_of_accuracy=best[1])
    return out
