"""Markdown a person reads in the Prefect UI: one stage's stats as a table, and an iteration's summary
(headline accuracy, judge quality, pairs, training, stage times). Plain strings: the library imports no
Prefect; tasks/ publishes them as artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selftrain.report.gather import IterationData, gather
from selftrain.report.tables import Row, eval_rows, judge_row, pairs_row, throughput
from selftrain.store import Manifest


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def markdown_table(rows: list[Row]) -> str:
    if not rows:
        return "_none_"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def stage_markdown(manifest: Manifest, run_name: str) -> str:
    """A stage's manifest stats as a two-column table (nested stats flattened to dotted keys)."""
    head = f"### {run_name} iter-{manifest.iteration:03d}/{manifest.stage}\n\n"
    head += f"{manifest.rows} rows, {manifest.started_at} → {manifest.finished_at}, fingerprint `{manifest.fingerprint}`\n\n"
    rows = [{"stat": k, "value": v} for k, v in _flatten(manifest.stats).items()]
    return head + markdown_table(rows)


def _accuracy_line(it: IterationData, base: dict[str, dict]) -> list[str]:
    lines = []
    for src, cell in sorted(it.metrics().get("policy", {}).items()):
        text = f"- **{src}**: {cell['accuracy']:.3f} greedy ({cell['correct']}/{cell['n']})"
        ref = base.get(src)
        if ref and ref.get("accuracy") is not None:
            text += f", base {ref['accuracy']:.3f} ({cell['accuracy'] - ref['accuracy']:+.3f})"
        if cell.get("best_of_accuracy") is not None:
            text += f"; best-of-{cell['best_of_k']} {cell['best_of_accuracy']:.3f}"
        lines.append(text)
    return lines


def iteration_summary(run_dir: str | Path, iteration: int) -> tuple[str, list[Row]]:
    """(markdown summary, evaluation table rows) of one iteration, from the store."""
    run = gather(run_dir, iterations=[0, iteration])
    by_it = {it.iteration: it for it in run.iterations}
    it = by_it[iteration]
    base = by_it[0].metrics().get("base", {}) if 0 in by_it else {}
    md = [f"## {run.name}: iteration {iteration}", ""]
    md += ["**Accuracy** of the policy trained in this iteration:"]
    md += _accuracy_line(it, base) or ["- not evaluated yet"]
    j = judge_row(it)
    if j:
        md += [
            "",
            f"**Judge** (samples graded against references, diagnostic only): AUROC {_fmt(j['AUROC pooled'])} "
            f"pooled, {_fmt(j['AUROC within question'])} within question ({j['mixed questions']} questions with "
            f"right and wrong samples), ECE {_fmt(j['ECE'])}, sample accuracy {_fmt(j['sample accuracy'])}",
        ]
    p = pairs_row(it)
    if p:
        md += [
            "",
            f"**Pairs**: {p['pairs']} from {p['questions']} questions; without a pair: "
            f"{p['questions without a pair']}; median score gap {_fmt(p['median score gap'])}",
        ]
    t = it.stage("train").stats
    if t:
        md += [
            "",
            f"**Training**: {t.get('steps')} steps on {t.get('pairs')} pairs, final loss {_fmt(t.get('loss'))}, "
            f"reward margin {_fmt(t.get('rewards_margins'))}, reward accuracy {_fmt(t.get('rewards_accuracies'))}",
        ]
    times = [
        {"stage": s, "status": st.status, "wall (s)": st.wall_s, "throughput": throughput(st) or "-"}
        for s, st in it.stages.items()
    ]
    md += ["", "**Stages**", "", markdown_table(times)]
    missing = [st.where + " " + st.status for st in it.stages.values() if st.status != "done"]
    if missing:
        md += ["", "Not complete: " + ", ".join(missing)]
    return "\n".join(md), eval_rows(it)
