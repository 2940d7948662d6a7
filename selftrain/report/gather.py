"""Everything the run report shows, read from the store alone (manifests, Parquet shards, the trainer's log
history), so a report can be made on another machine and for a run that is still going or stopped half-way.
What is absent or unreadable is recorded, not raised: the report lists it."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from selftrain.diagnostics import sample_labels
from selftrain.judges import JUDGES
from selftrain.methods import method_of
from selftrain.report.calibration import JudgeQuality, judge_quality
from selftrain.store import (
    DAMAGED,
    FAILED,
    STARTED,
    Manifest,
    RunStore,
    StoreError,
    marker,
    read_stage,
)

log = logging.getLogger(__name__)


@dataclass
class StageInfo:
    iteration: int
    stage: str
    status: str  # done | damaged | partial | failed | missing
    manifest: Manifest | None = None
    error: str | None = None

    @property
    def where(self) -> str:
        return f"iter-{self.iteration:03d}/{self.stage}"

    @property
    def wall_s(self) -> float | None:
        """Wall time of the attempt that completed the stage (the manifest's times have 1 s resolution)."""
        m = self.manifest
        if m is None or not m.started_at or not m.finished_at:
            return None
        return (datetime.fromisoformat(m.finished_at) - datetime.fromisoformat(m.started_at)).total_seconds()

    @property
    def stats(self) -> dict[str, Any]:
        return self.manifest.stats if self.manifest else {}


@dataclass
class JudgeData:
    question_ids: list[str]
    scores: list[float]
    labels: list[bool]
    quality: JudgeQuality


@dataclass
class IterationData:
    iteration: int
    stages: dict[str, StageInfo]
    questions: list[dict] | None = None
    judge: JudgeData | None = None
    pairs: list[dict] | None = None
    log_history: list[dict] | None = None

    def stage(self, name: str) -> StageInfo:
        """The stage `name`; one the run's method does not have counts as missing (and is not listed)."""
        return self.stages.get(name) or StageInfo(self.iteration, name, "missing")

    def metrics(self) -> dict[str, dict[str, dict]]:
        """Evaluation metrics {model: {source: cell}} from the method's evaluation stage (the one whose
        manifest carries them); {} when not evaluated."""
        return next((st.stats["metrics"] for st in self.stages.values() if "metrics" in st.stats), {})


@dataclass
class RunData:
    run_dir: Path
    name: str
    config: dict[str, Any]
    iterations_configured: int
    iterations: list[IterationData]
    problems: list[str] = field(default_factory=list)  # unreadable things, beyond plain missing stages

    def missing(self) -> list[StageInfo]:
        return [st for it in self.iterations for st in it.stages.values() if st.status != "done"]


def stage_info(store: RunStore, iteration: int, stage: str) -> StageInfo:
    """Status from the files alone (no config needed, so no staleness check: `selftrain status` does that)."""
    d = store.stage_dir(iteration, stage)
    manifest = store.manifest(iteration, stage)
    if manifest is not None and marker(d, DAMAGED).exists():
        # `selftrain verify` found its files changed: its numbers are shown, the stage is listed as damaged
        return StageInfo(iteration, stage, "damaged", manifest, error="files differ from the manifest")
    if manifest is not None:
        return StageInfo(iteration, stage, "done", manifest)
    if marker(d, FAILED).exists():
        try:
            error = json.loads(marker(d, FAILED).read_text()).get("error")
        except (OSError, ValueError):
            error = None
        return StageInfo(iteration, stage, "failed", error=error)
    if marker(d, STARTED).exists():
        return StageInfo(iteration, stage, "partial")
    return StageInfo(iteration, stage, "missing")


def _rows(store: RunStore, st: StageInfo, columns: list[str], problems: list[str]) -> list[dict] | None:
    if st.manifest is None:
        return None
    try:
        # no sha256 check: the report only reads, and hashing every shard of a big run takes long
        return read_stage(store.stage_dir(st.iteration, st.stage), verify=False).select(columns).to_pylist()
    except (StoreError, KeyError, ValueError) as e:
        problems.append(f"{st.where}: unreadable ({str(e).splitlines()[0]})")
        return None


def _judge(questions: list[dict], scored: list[dict], scale: float = 1.0) -> JudgeData | None:
    """`scale`: the judge's maximum score (llm_as_judge: 5 points), so the calibration reads it on [0, 1]."""

    # Graded here, not read: the store keeps no per-sample grade (the sample and score tables have no
    # correctness column; the score stage grades them too, but keeps only the totals in its manifest's stats),
    # and the calibration needs each sample's. Evaluation numbers are never re-graded: they are the evaluate
    # manifest's metrics (IterationData.metrics), counted from its table's `correct` column.
    graded = sample_labels(questions, scored)
    if not graded:
        return None
    qids = [row["question_id"] for row, _ in graded]
    scores = [float(row["score"]) / scale for row, _ in graded]
    labels = [ok for _, ok in graded]
    return JudgeData(qids, scores, labels, judge_quality(qids, scores, labels))


def _log_history(store: RunStore, st: StageInfo, problems: list[str]) -> list[dict] | None:
    path = store.stage_dir(st.iteration, "train") / "log_history.json"
    if st.manifest is None or not path.exists():
        if st.manifest is not None and st.stats.get("trained", True) and st.stats.get("steps"):
            problems.append(f"{st.where}: no log_history.json (trained before the train stage kept it)")
        return None
    try:
        history = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        problems.append(f"{path}: unreadable ({e})")
        return None
    return [h for h in history if isinstance(h, dict)]


def _method_stages(config: dict[str, Any]) -> tuple[str, ...]:
    """The stages of the run's method, read from its config as it is (a report never fails on a config)."""

    return method_of(config).stages


def gather(run_dir: str | Path, iterations: list[int] | None = None) -> RunData:
    """The run's data; `iterations` limits which iterations are read (all by default)."""
    store = RunStore(run_dir)
    on_disk = store.iterations_on_disk()
    config: dict[str, Any] = {}
    if store.config_path.exists():
        try:
            config = yaml.safe_load(store.config_path.read_text()) or {}
        except yaml.YAMLError as e:
            raise StoreError(f"{store.config_path}: not valid YAML ({str(e).splitlines()[0]})") from None
    elif not on_disk:
        raise StoreError(f"{run_dir} is not a run folder (no config.yaml, no iter-NNN folders)")
    configured = int((config.get("run") or {}).get("iterations") or 0)
    name = str((config.get("run") or {}).get("name") or store.run_dir.name)
    problems: list[str] = []
    found = []
    for it in sorted(set(range(configured)) | set(on_disk)):
        if iterations is not None and it not in iterations:
            continue
        data = IterationData(it, {s: stage_info(store, it, s) for s in _method_stages(config)})
        st = data.stage
        data.questions = _rows(
            store, st("questions"), ["question_id", "task", "question", "reference", "choices"], problems
        )
        scored = _rows(store, st("score"), ["question_id", "sample_index", "answer", "score"], problems)
        if data.questions is not None and scored is not None:
            name = (config.get("judge") or {}).get("name")
            data.judge = _judge(data.questions, scored, JUDGES.get(name).max_score if name in JUDGES else 1.0)
        data.pairs = _rows(
            store,
            st("pairs"),
            ["question_id", "chosen", "rejected", "chosen_score", "rejected_score"],
            problems,
        )
        data.log_history = _log_history(store, st("train"), problems)
        found.append(data)
    return RunData(store.run_dir, name, config, configured, found, problems)
