"""The report's figures (matplotlib, Agg backend: no display, works offline). Each function returns a
Figure, or None when the run holds nothing to draw for it yet."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: a head-less machine has no display for the default backend

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from selftrain.report.calibration import quantile_bins  # noqa: E402
from selftrain.report.gather import IterationData, RunData  # noqa: E402
from selftrain.spec import STAGES  # noqa: E402

TRAIN_METRICS = [
    ("loss", "DPO loss"),
    ("rewards/margins", "reward margin"),
    ("rewards/accuracies", "reward accuracy"),
]
# tab10 for the first ten stage kinds (the preference chain keeps its colours), Dark2 beyond
# one colour per stage kind: 38 to pick from, more than there are kinds (a missing one is a KeyError in a report)
_COLORS = [*plt.get_cmap("tab10").colors, *plt.get_cmap("Dark2").colors, *plt.get_cmap("tab20b").colors]
STAGE_COLORS = dict(zip(STAGES, _COLORS, strict=False))
RIGHT, WRONG = "#2a9d8f", "#e76f51"


def _iter_color(i: int, n: int) -> tuple:
    return plt.get_cmap("viridis")(0.15 + 0.7 * (i / max(1, n - 1)))


def _style(ax, title: str, xlabel: str, ylabel: str | None = None, legend: bool = True) -> None:  # noqa: ANN001
    """Title and axis labels, a light grid, no top and right spines, and (after plotting) a small legend."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    if legend and ax.get_legend_handles_labels()[0]:  # an empty legend only warns on the user's terminal
        ax.legend(fontsize=8)


def _of_iterations(has: Callable[[IterationData], Any]):
    """A figure drawn from the iterations where `has` holds (`draw(its)`), laid out; None where none does."""

    def wrap(draw: Callable[[list[IterationData]], Figure]) -> Callable[[RunData], Figure | None]:
        def figure(run: RunData) -> Figure | None:
            its = [it for it in run.iterations if has(it)]
            if not its:
                return None
            fig = draw(its)
            fig.tight_layout()
            return fig

        figure.__doc__ = draw.__doc__
        return figure

    return wrap


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of an accuracy: an error bar that stays inside [0, 1] at small n."""
    if n == 0:
        return 0.0, 0.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def accuracy(run: RunData) -> Figure | None:
    """Per evaluation source: policy accuracy per iteration with 95 % intervals, best-of-K beside greedy, the
    base model as horizontal reference lines."""
    by_source: dict[str, dict[str, list]] = {}
    for it in run.iterations:
        for model, cells in it.metrics().items():
            for src, cell in cells.items():
                by_source.setdefault(src, {}).setdefault(model, []).append((it.iteration, cell))
    if not by_source:
        return None
    fig, axes = plt.subplots(1, len(by_source), figsize=(5.2 * len(by_source), 3.6), squeeze=False)
    for ax, (src, models) in zip(axes[0], sorted(by_source.items()), strict=True):
        for _, cell in models.get("base", [])[:1]:
            ax.axhline(
                cell["accuracy"], color="grey", ls="--", lw=1.2, label=f"base greedy {cell['accuracy']:.3f}"
            )
            if cell.get("best_of_accuracy") is not None:
                ax.axhline(
                    cell["best_of_accuracy"],
                    color="grey",
                    ls=":",
                    lw=1.2,
                    label=f"base best-of-{cell['best_of_k']} {cell['best_of_accuracy']:.3f}",
                )
        policy = models.get("policy", [])
        for key, correct_key, label, color, marker in (
            ("accuracy", "correct", "policy greedy", "#264653", "o"),
            ("best_of_accuracy", "best_of_correct", "policy best-of-K", "#e9c46a", "s"),
        ):
            points = [(i, c) for i, c in policy if c.get(key) is not None]
            if not points:
                continue
            xs = [i for i, _ in points]
            ys = [c[key] for _, c in points]
            lo_hi = [wilson(c[correct_key], c["n"]) for _, c in points]
            err = [
                [y - lo for y, (lo, _) in zip(ys, lo_hi, strict=True)],
                [hi - y for y, (_, hi) in zip(ys, lo_hi, strict=True)],
            ]
            if key == "best_of_accuracy":
                label = f"policy best-of-{points[0][1].get('best_of_k')}"
            ax.errorbar(xs, ys, yerr=err, color=color, marker=marker, capsize=3, label=label)
        n = policy[-1][1]["n"] if policy else models.get("base", [(0, {"n": 0})])[0][1]["n"]
        ax.set_xticks([i.iteration for i in run.iterations])
        ax.set_ylim(-0.02, 1.02)
        _style(ax, f"{src} (n={n})", "iteration (policy after training)", "accuracy")
    fig.tight_layout()
    return fig


@_of_iterations(lambda it: it.judge is not None)
def judge(its: list[IterationData]) -> Figure:
    """Left: reliability diagram (mean score vs share right, per score bin) per iteration. Right: AUROC
    pooled and within question, and ECE, over iterations."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    top = 0.0
    for k, it in enumerate(its):
        q = it.judge.quality
        bins = quantile_bins(it.judge.scores, it.judge.labels)
        pts = [(b.mean_score, b.accuracy, b.n) for b in bins if b.n]
        top = max([top, *(max(x, y) for x, y, _ in pts)])
        color = _iter_color(k, len(its))
        ece = "n/a" if q.ece is None else f"{q.ece:.3f}"
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            color=color,
            marker="o",
            label=f"iter {it.iteration} (ECE {ece})",
        )
    # zoomed to the data: scores crowded near 0.25 are unreadable on a 0-1 square
    lim = min(1.0, top * 1.15 + 0.02)
    ax.plot([0, lim], [0, lim], color="grey", ls="--", lw=1, label="perfect calibration")
    ax.set_xlim(-0.01 * lim, lim * 1.02)
    ax.set_ylim(-0.01 * lim, lim * 1.02)
    _style(
        ax,
        "reliability (each point: a tenth of the samples)",
        "judge score (bin mean)",
        "share of samples right",
    )
    xs = [it.iteration for it in its]
    for attr, label, style in (
        ("auroc", "AUROC pooled", "-o"),
        ("within_auroc", "AUROC within question", "-s"),
        ("ece", "ECE", "--^"),
    ):
        ys = [getattr(it.judge.quality, attr) for it in its]
        ax2.plot(xs, [math.nan if y is None else y for y in ys], style, label=label)
    ax2.axhline(0.5, color="grey", ls=":", lw=1, label="chance AUROC")
    ax2.set_xticks(xs)
    ax2.set_ylim(-0.02, 1.02)
    _style(ax2, "judge quality per iteration", "iteration (judge = the policy that sampled)")
    return fig


@_of_iterations(lambda it: it.judge is not None)
def score_histograms(its: list[IterationData]) -> Figure:
    cols = min(len(its), 4)
    rows = math.ceil(len(its) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    # one set of bins for every panel, over the range the scores occupy (often a narrow one)
    every = [min(max(s, 0.0), 1.0) for it in its for s in it.judge.scores]
    lo, hi = min(every), max(every)
    width = (hi - lo) / 30 or 0.01
    bins = [lo + i * width for i in range(31)]
    for ax, it in zip(axes.flat, its, strict=False):
        j = it.judge
        for name, right, color in (("wrong", False, WRONG), ("right", True, RIGHT)):
            xs = [min(max(s, 0), 1) for s, y in zip(j.scores, j.labels, strict=True) if bool(y) == right]
            ax.hist(xs, bins=bins, alpha=0.6, color=color, label=f"{name} ({len(xs)})")
        _style(ax, f"iter {it.iteration}: judge scores", "score", "samples")
    for ax in list(axes.flat)[len(its) :]:
        ax.axis("off")
    return fig


@_of_iterations(lambda it: it.pairs)
def pairs(its: list[IterationData]) -> Figure:
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    # chosen-only builders (SFT data) have no rejected side: their panel shows the chosen score instead
    one_sided = all(p["rejected_score"] is None for it in its for p in it.pairs)
    for k, it in enumerate(its):
        gaps = [
            p["chosen_score"] if one_sided else p["chosen_score"] - p["rejected_score"]
            for p in it.pairs
            if one_sided or p["rejected_score"] is not None
        ]
        ax.hist(
            gaps,
            bins=20,
            histtype="step",
            lw=1.8,
            color=_iter_color(k, len(its)),
            label=f"iter {it.iteration} ({len(gaps)} pairs)",
        )
    _style(
        ax,
        "chosen score" if one_sided else "score gap",
        "chosen score" if one_sided else "chosen score - rejected score",
        "pairs",
    )
    data, positions, colors = [], [], []
    for k, it in enumerate(its):
        data += [
            [len(p["chosen"]) for p in it.pairs],
            [len(p["rejected"]) for p in it.pairs if p["rejected"]],
        ]
        positions += [3 * k, 3 * k + 1]
        colors += [RIGHT, WRONG]
    box = ax2.boxplot(data, positions=positions, widths=0.8, patch_artist=True, showfliers=False)
    for patch, color in zip(box["boxes"], colors, strict=True):
        patch.set_facecolor(color)
        patch.set_alpha(0.6)
    ax2.set_xticks([3 * k + 0.5 for k in range(len(its))], [f"iter {it.iteration}" for it in its])
    _style(ax2, "length: chosen (green) vs rejected (red)", "", "characters", legend=False)
    return fig


@_of_iterations(lambda it: it.log_history)
def training(its: list[IterationData]) -> Figure:
    fig, axes = plt.subplots(1, len(TRAIN_METRICS), figsize=(5 * len(TRAIN_METRICS), 3.5))
    for ax, (key, title) in zip(axes, TRAIN_METRICS, strict=True):
        for k, it in enumerate(its):
            pts = [(h["step"], h[key]) for h in it.log_history if key in h and "step" in h]
            if pts:
                ax.plot(
                    *zip(*pts, strict=True),
                    marker=".",
                    color=_iter_color(k, len(its)),
                    label=f"iter {it.iteration}",
                )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _style(ax, title, "optimizer step")
    return fig


@_of_iterations(lambda it: any(st.wall_s is not None for st in it.stages.values()))
def stage_times(its: list[IterationData]) -> Figure:
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(its) + 1.6))
    for it in its:
        left = 0.0
        for stage, st in it.stages.items():
            w = st.wall_s
            if w is None:
                continue
            ax.barh(
                it.iteration, w, left=left, color=STAGE_COLORS[stage], label=stage if it is its[0] else None
            )
            left += w
    ax.set_yticks([it.iteration for it in its], [f"iter {it.iteration}" for it in its])
    ax.invert_yaxis()
    _style(ax, "time per stage", "wall time (s)", legend=False)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(
        handles,
        labels,
        fontsize=8,
        ncol=len(labels),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.35 if len(its) < 3 else -0.2),
    )
    return fig


FIGURES = {
    "accuracy": accuracy,
    "judge": judge,
    "judge_scores": score_histograms,
    "pairs": pairs,
    "training": training,
    "time": stage_times,
}


def render_png(fig: Figure, path: Path) -> bytes:
    """Write the figure as PNG to `path` and return the bytes (the HTML embeds the same image)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    path.write_bytes(data)
    return data
