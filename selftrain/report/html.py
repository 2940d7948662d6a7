"""One self-contained HTML page: inline CSS, figures as base64 data URIs, no script and no external URL, so
it opens offline from a file, an e-mail attachment or a CI artifact."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from datetime import datetime, timezone

from selftrain.report.gather import RunData
from selftrain.report.tables import Row

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 1.5em 2em 4em; color: #1d2b36; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 2px solid #e0e6ea; }
.meta { color: #5b6b78; } .note { color: #5b6b78; max-width: 75em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 13px; }
th, td { border: 1px solid #d5dde3; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f1f4f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.done { background: #dff3e4; } td.partial, td.failed, td.damaged { background: #fbe3d6; } td.missing { background: #f4f4f4; color: #888; }
img { max-width: 100%; border: 1px solid #e0e6ea; margin: 0.5em 0; }
.examples td { max-width: 26em; white-space: pre-wrap; word-break: break-word; font-family: ui-monospace, monospace; font-size: 12px; }
.warn { background: #fff6db; border-left: 4px solid #e9c46a; padding: 0.6em 1em; }
nav a { margin-right: 1em; }
"""


def e(x: object) -> str:
    return html.escape("" if x is None else str(x))


def table(rows: Sequence[Row], cls: str = "", status_cells: bool = False) -> str:
    if not rows:
        return "<p class='note'>nothing yet</p>"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    out = [f"<table class='{cls}'><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr>"]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            klass = "num" if isinstance(v, int | float) and not isinstance(v, bool) else ""
            if status_cells and c != "iteration":
                klass = str(v)
            text = "-" if v is None else f"{v:g}" if isinstance(v, float) else v
            cells.append(f"<td class='{klass}'>{e(text)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</table>"


def image(png: bytes | None, alt: str) -> str:
    if png is None:
        return "<p class='note'>no figure: the stages it needs are not complete yet</p>"
    data = base64.b64encode(png).decode("ascii")
    return f"<img alt='{e(alt)}' src='data:image/png;base64,{data}'>"


def page(run: RunData, sections: list[tuple[str, str, str]], missing: list[str]) -> str:
    """sections: (anchor, title, body html)."""
    cfg = run.config
    model = (cfg.get("model") or {}).get("path", "?")
    judge = (cfg.get("judge") or {}).get("name", "?")
    builder = (cfg.get("pairs") or {}).get("builder", "best_vs_rest")
    done = sum(
        1
        for it in run.iterations
        if any(st.status == "done" and "metrics" in st.stats for st in it.stages.values())
    )
    head = (
        f"<h1>selftrain run report: {e(run.name)}</h1>"
        f"<p class='meta'>{e(run.run_dir)} · model {e(model)} · judge {e(judge)} · pairs {e(builder)} · "
        f"{done} of {run.iterations_configured or len(run.iterations)} iterations evaluated · generated "
        f"{e(datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))}</p>"
    )
    if missing:
        items = "".join(f"<li>{e(m)}</li>" for m in missing)
        head += f"<div class='warn'><b>Not in the store (yet):</b> the report shows what exists.<ul>{items}</ul></div>"
    nav = "<nav>" + "".join(f"<a href='#{a}'>{e(t)}</a>" for a, t, _ in sections) + "</nav>"
    body = "".join(f"<h2 id='{a}'>{e(t)}</h2>{b}" for a, t, b in sections)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>selftrain report: {e(run.name)}</title><style>{CSS}</style></head>"
        f"<body>{head}{nav}{body}</body></html>\n"
    )
