"""What each stage of a run reads, its fingerprint and its state, derived from the stage spec (selftrain.spec)
and the run's method (selftrain.methods). Pure bookkeeping: nothing here runs a stage (selftrain.pipeline does).
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from typing import Any

from selftrain.config import Config, flatten
from selftrain.engines.base import resolve_engine_name
from selftrain.methods import METHODS
from selftrain.spec import POLICY, QUESTIONS, StageSpec, kind
from selftrain.store import FAILED, STARTED, Manifest, RunStore, StoreError, damage, fingerprint, marker


class StaleError(StoreError):
    """A completed stage no longer matches the config; the message names the keys that changed."""


class StageCrashed(StoreError):
    """A stage's own process died (engine crash, OOM kill): unlike other StoreErrors, worth a retry."""


class StageRefused(StoreError):
    """A stage's own process stopped on a user error (bad config or data) and recorded it: not retried."""


def policy_stage(cfg: Config) -> str:
    """The stage whose adapter is the policy: it samples the next iteration and is evaluated."""
    return METHODS.get(cfg.method).policy


def questions_stage(cfg: Config) -> str:
    """The stage whose rows are the iteration's questions: `questions`, or `prompts` (self-instruction)."""
    return METHODS.get(cfg.method).questions


def method_stages(cfg: Config) -> tuple[str, ...]:
    """The stage kinds of the run's method, in an order where every stage follows its inputs."""
    return METHODS.get(cfg.method).stages


def inputs_of(cfg: Config, stage: str) -> list[tuple[bool, str]]:
    """(from the previous iteration?, stage) of each input `stage` reads under this config."""
    return [
        (
            needed.previous,
            {POLICY: policy_stage(cfg), QUESTIONS: questions_stage(cfg)}.get(needed.stage, needed.stage),
        )
        for needed in kind(stage).inputs
        if needed.when is None or needed.when(cfg)
    ]


def upstream_of(cfg: Config, iteration: int, stage: str) -> list[tuple[int, str]]:
    """(iteration, stage) of every output `stage` reads in `iteration` (none from before iteration 0)."""
    return [(iteration - prev, st) for prev, st in inputs_of(cfg, stage) if not (prev and iteration == 0)]


def dag(cfg: Config) -> dict[str, list[str]]:
    """The run's iteration DAG: each stage of its method (in method order) -> the stages of the same iteration
    it reads. Stages that do not read each other may run at the same time."""
    return {s: [up for prev, up in inputs_of(cfg, s) if not prev] for s in method_stages(cfg)}


def ready(graph: dict[str, list[str]], complete: set[str], started: set[str]) -> list[str]:
    """The stages of `graph` (see `dag`) not yet started whose inputs are all complete: what may start now."""
    return [s for s, needs in graph.items() if s not in started and all(n in complete for n in needs)]


def downstream_of(cfg: Config, stage: str) -> list[str]:
    """This stage and every stage of the same iteration that reads it, directly or not, in method order."""
    order = method_stages(cfg)
    affected = {stage}
    for name in order[order.index(stage) + 1 :]:
        if any(not prev and up in affected for prev, up in inputs_of(cfg, name)):
            affected.add(name)
    return [s for s in order if s in affected]


# Fields added after runs were written, left out of a fingerprint while they hold this value (their default):
# a run written before the field existed stays complete, and setting the field makes the stage stale.
OMIT_AT_DEFAULT = {
    "prompt.one_shot": False,
    "judge.min_parse_rate": 0.0,
    "judge.votes": "all",
    "judge.min_votes": 1,
    "data.*.*.label": None,
}


def _omitted(key: str, value: Any) -> bool:
    return any(fnmatch.fnmatchcase(key, p) and value == v for p, v in OMIT_AT_DEFAULT.items())


def stage_config(cfg: Config, stage: str) -> dict[str, Any]:
    """The flattened config keys a stage reads (its kind's `keys`, minus its `ignore` patterns and the
    OMIT_AT_DEFAULT fields at their default)."""
    spec: StageSpec = kind(stage)
    flat: dict[str, Any] = {}
    for key in spec.keys:
        flat.update(flatten(cfg.section(key), f"{key}."))
    flat = {k: v for k, v in flat.items() if not any(fnmatch.fnmatchcase(k, p) for p in spec.ignore)}
    flat = {k: v for k, v in flat.items() if not _omitted(k, v)}
    dropped = [p for p, holds in spec.only_when if not holds(cfg)]
    flat = {k: v for k, v in flat.items() if not any(fnmatch.fnmatchcase(k, p) for p in dropped)}
    if "engine.name" in flat:
        flat["engine.name"] = resolve_engine_name(flat["engine.name"])
    return flat


@dataclass
class StageState:
    iteration: int
    stage: str
    status: str  # done | damaged | stale | partial | failed | missing | blocked
    reasons: list[str] = field(default_factory=list)
    manifest: Manifest | None = None
    # what `expected` returned for it: run_stage takes it, so that a stage computes it once (None: blocked)
    expected: tuple[str, dict, dict] | None = None


def expected(cfg: Config, store: RunStore, iteration: int, stage: str) -> tuple[str, dict, dict] | None:
    """(fingerprint, config keys, upstream output ids) if every upstream is complete, else None."""
    upstream: dict[str, str] = {}
    for it, st in upstream_of(cfg, iteration, stage):
        m = store.manifest(it, st)
        if m is None:
            return None
        upstream[f"iter-{it:03d}/{st}"] = m.output_id
    conf = stage_config(cfg, stage)
    return fingerprint(stage, conf, upstream), conf, upstream


def stage_state(cfg: Config, store: RunStore, iteration: int, stage: str) -> StageState:
    exp = expected(cfg, store, iteration, stage)
    state = _stage_state(store, iteration, stage, exp)
    state.expected = exp
    return state


def _stage_state(
    store: RunStore, iteration: int, stage: str, exp: tuple[str, dict, dict] | None
) -> StageState:
    d = store.stage_dir(iteration, stage)
    m = store.manifest(iteration, stage)
    if m is None:
        if marker(d, FAILED).exists():
            err = json.loads(marker(d, FAILED).read_text()).get("error", "")
            return StageState(iteration, stage, "failed", [err])
        if marker(d, STARTED).exists():
            return StageState(iteration, stage, "partial")
        return StageState(iteration, stage, "missing" if exp else "blocked")
    problems = damage(d, m)  # sizes only (a stat per file), and what `selftrain verify` recorded
    if problems:
        return StageState(iteration, stage, "damaged", problems, m)
    if exp is None:
        return StageState(iteration, stage, "stale", ["an upstream stage is missing"], m)
    fp, conf, upstream = exp
    if fp == m.fingerprint:
        return StageState(iteration, stage, "done", [], m)
    reasons = [
        f"{k}: {m.config.get(k)!r} -> {conf.get(k)!r}"
        for k in sorted(set(conf) | set(m.config))
        if conf.get(k) != m.config.get(k)
    ]
    reasons += [f"upstream {k} was rebuilt" for k in upstream if upstream[k] != m.upstream.get(k)]
    return StageState(iteration, stage, "stale", reasons or ["schema version changed"], m)


def rerun_command(store: RunStore, iteration: int, stage: str) -> str:
    return f"selftrain rerun {store.run_dir} --iteration {iteration} --stage {stage}"


def damaged_message(store: RunStore, state: StageState) -> str:
    return (
        f"iter-{state.iteration:03d}/{state.stage} is damaged ({'; '.join(state.reasons)}): "
        f"`{rerun_command(store, state.iteration, state.stage)}` redoes it (or run with --rebuild-stale)"
    )
