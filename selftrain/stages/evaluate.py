"""Stage 6, evaluate: greedy accuracy of this iteration's policy on held-out questions, per source, and with
`evaluation.best_of` K > 1 also best-of-K accuracy: K sampled candidates per question, scored by the run's
judge (the same registry call the score stage makes), the highest-scored one graded (the CORE-PO paper's
"P(True) best-of-8").

In iteration 0 the base model is evaluated too (`evaluation.baseline`), so every run shows its starting point.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable

import pyarrow as pa

from selftrain.config import Config
from selftrain.data.sources import load_source
from selftrain.engines.base import Completion, Engine, SamplingSpec
from selftrain.engines.lazy import LazyEngine
from selftrain.fileio import atomic_write_text
from selftrain.grading import grade
from selftrain.judges import JUDGES, Judging
from selftrain.prompts import PromptBuilder
from selftrain.schemas import EVAL
from selftrain.stages.common import StageInputs, chunks, finish, read_shards, shard_seed, write_sharded
from selftrain.stages.sample import sample_rows
from selftrain.store import METRICS, Manifest, StageWriter, file_info

log = logging.getLogger(__name__)


def metrics_by_source(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """{model: {source: {n, correct, accuracy}}}, plus best_of_k, best_of_correct and best_of_accuracy where
    the rows hold best-of candidates. Only `selected` rows count."""
    acc: dict[str, dict[str, dict[str, list[int]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(lambda: [0, 0]))
    )
    k: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        if r["decoding"] == "best_of":
            k[r["model"]][r["source"]] = max(k[r["model"]][r["source"]], r["sample_index"] + 1)
        if not r["selected"]:
            continue
        cell = acc[r["model"]][r["source"]][r["decoding"]]
        cell[0] += 1
        cell[1] += bool(r["correct"])
    out: dict[str, dict[str, dict]] = {}
    for model, by_src in acc.items():
        for src, by_dec in by_src.items():
            n, c = by_dec["greedy"]
            cell = {"n": n, "correct": c, "accuracy": round(c / n, 6) if n else None}
            if "best_of" in by_dec:
                bn, bc = by_dec["best_of"]
                cell.update(best_of_k=k[model][src], best_of_correct=bc, best_of_accuracy=round(bc / bn, 6))
            out.setdefault(model, {})[src] = cell
    return out


def _row(q: dict, decoding: str, index: int, comp: Completion, score: float | None, selected: bool) -> dict:
    answer, ok = grade(q["task"], comp.text, q["reference"], q["choices"])
    return {
        "model": q["model"],
        "decoding": decoding,
        "source": q["source"],
        "question_id": q["question_id"],
        "sample_index": index,
        "completion": comp.text,
        "finish_reason": comp.finish_reason,
        "answer": answer,
        "reference": q["reference"],
        "correct": ok,
        "judge_score": score,
        "selected": selected,
    }


def best_of_rows(
    cfg: Config, group: list[dict], prompts: list[str], engine: Engine, builder: PromptBuilder, seed: int
) -> list[dict]:
    """K candidates per question, scored by the run's judge; each is a row, the highest-scored `selected`
    (ties go to the lowest sample index, as in the pairs stage)."""
    ev = cfg.evaluation
    spec = SamplingSpec(ev.best_of, ev.best_of_temperature, ev.best_of_top_p, ev.max_tokens, seed)
    outs = engine.generate(prompts, spec)
    # The judge sees the candidates exactly as the score stage sees samples. Ids local to the group: two eval
    # sources of the same name and split share question ids, and the judge groups samples by id.
    local = [{**q, "question_id": str(j)} for j, q in enumerate(group)]
    samples: dict[str, list[dict]] = defaultdict(list)
    for s in sample_rows(local, prompts, outs):
        samples[s["question_id"]].append(s)
    scored = JUDGES.get(cfg.judge.name)(Judging(cfg.judge, local, samples, engine, builder, seed))
    score = {(r["question_id"], r["sample_index"]): r["score"] for r in scored}
    rows = []
    for j, (q, comps) in enumerate(zip(group, outs, strict=True)):
        scores = [score[(str(j), i)] for i in range(len(comps))]
        # an unscored candidate (no judgment parsed) is picked only when none has a score
        best = max(range(len(comps)), key=lambda i: (scores[i] is not None, scores[i] or 0.0, -i))
        rows += [_row(q, "best_of", i, c, scores[i], i == best) for i, c in enumerate(comps)]
    return rows


def eval_groups(cfg: Config, inputs: StageInputs) -> tuple[list[list[dict]], dict[str, LazyEngine]]:
    """The held-out questions in groups of evaluation.batch_size, one group per shard, each tagged with the
    model that answers it ("policy", and in iteration 0 with evaluation.baseline also "base" first), and a
    lazily loaded engine per model. Shared by the evaluation stages."""
    questions: list[dict] = []
    for spec in cfg.data.eval:
        questions.extend(load_source(spec, cfg.run.seed))
    models = ["policy"]
    if inputs.iteration == 0 and cfg.evaluation.baseline:
        models.insert(0, "base")
    engines = {
        "base": LazyEngine(cfg, None),
        "policy": LazyEngine(cfg, inputs.policy_adapter(inputs.iteration)),
    }
    groups = [
        [{**q, "model": m} for q in chunk]
        for m in models
        for chunk in chunks(questions, cfg.evaluation.batch_size)
    ]
    return groups, engines


def engine_for(engines: dict[str, LazyEngine], model: str) -> LazyEngine:
    """The engine of `model`, with every other one closed: one model in memory at a time."""
    for other, e in engines.items():
        if other != model:
            e.close()
    return engines[model]


def greedy_rows(lazy: LazyEngine, group: list[dict], greedy: SamplingSpec) -> tuple[list[str], list[dict]]:
    """(the plain question prompts, one graded greedy row per question) of a group that `lazy` answers."""
    prompts = [lazy.builder.question(q["question"], q["choices"]) for q in group]
    outs = lazy.engine.generate(prompts, greedy)
    return prompts, [_row(q, "greedy", 0, comps[0], None, True) for q, comps in zip(group, outs, strict=True)]


def greedy_spec(cfg: Config) -> SamplingSpec:
    """Greedy decoding within evaluation.max_tokens: every evaluation's answers."""
    return SamplingSpec(n=1, temperature=0.0, top_p=1.0, max_tokens=cfg.evaluation.max_tokens, seed=0)


def evaluate_sharded(
    writer: StageWriter,
    inputs: StageInputs,
    groups: list[list[dict]],
    engines: dict[str, LazyEngine],
    make_rows: Callable[[list[dict], int], list[dict]],
    schema: pa.Schema,
    metrics: Callable[[list[dict]], dict[str, dict[str, dict]]],
) -> Manifest:
    """The tail of every evaluation stage: the groups' rows written shard by shard (every engine closed after,
    failed or not), then `metrics(rows)` beside the shards and in the manifest's stats, where accuracy tables
    read them. None in a data-parallel worker that does not write the manifest."""
    try:
        desc = f"{inputs.stage} iter-{inputs.iteration:03d}"
        shards = write_sharded(writer, inputs, groups, make_rows, schema, desc)
    finally:
        for e in engines.values():
            e.close()
    if shards is None:
        return None  # type: ignore[return-value]  # another worker writes the manifest
    values = metrics(read_shards(writer.dir, shards, schema).to_pylist())
    path = writer.dir / METRICS
    atomic_write_text(path, json.dumps(values, indent=2))
    return finish(writer, inputs, shards, {"metrics": values}, [file_info(path)])


def unchanged_policy_rows(cfg: Config, inputs: StageInputs) -> dict[str, list[dict]] | None:
    """Where this iteration's trainer trained nothing (no pairs), the policy is a model already evaluated: the
    previous policy (training.init previous) or the base. Returns the rows that model got, by question id, to
    copy instead of generating the same answers again: the previous iteration's policy rows, or a dict that the
    base rows of this stage fill as they are made (iteration 0). None when the policy changed or its rows do
    not exist."""
    policy = inputs.store.manifest(inputs.iteration, inputs.policy)
    if policy is None or policy.stats.get("trained") is not False:
        return None
    same_as_base = inputs.iteration == 0 or cfg.training.init == "base"
    if same_as_base:
        if inputs.iteration == 0 and cfg.evaluation.baseline:
            log.info("iter-000/%s trained nothing: the policy's rows are the base model's", inputs.policy)
            return {}
        return None
    try:
        earlier = inputs.table(inputs.stage, inputs.iteration - 1).to_pylist()
    except Exception:  # noqa: BLE001 - no earlier rows: evaluate as usual
        return None
    rows: dict[str, list[dict]] = defaultdict(list)
    for r in earlier:
        if r["model"] == "policy":
            rows[r["question_id"]].append(r)
    log.info(
        "iter-%03d/%s trained nothing: the policy's rows are iter-%03d's",
        inputs.iteration,
        inputs.policy,
        inputs.iteration - 1,
    )
    return rows


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    groups, engines = eval_groups(cfg, inputs)
    greedy = greedy_spec(cfg)
    same = unchanged_policy_rows(cfg, inputs)

    def make_rows(group: list[dict], index: int) -> list[dict]:
        if (
            same is not None
            and group[0]["model"] == "policy"
            and all(q["question_id"] in same for q in group)
        ):
            return [{**r, "model": "policy"} for q in group for r in same[q["question_id"]]]
        rows = model_rows(group, index)
        if same is not None and group[0]["model"] == "base":
            for r in rows:
                same.setdefault(r["question_id"], []).append(r)
        return rows

    def model_rows(group: list[dict], index: int) -> list[dict]:
        lazy = engine_for(engines, group[0]["model"])
        prompts, rows = greedy_rows(lazy, group, greedy)
        if cfg.evaluation.best_of > 1:
            # a per-shard seed: a redone shard samples and judges exactly the candidates the lost one did
            seed = shard_seed(cfg.run.seed, inputs.iteration, index)
            rows += best_of_rows(cfg, group, prompts, lazy.engine, lazy.builder, seed)
        return rows

    return evaluate_sharded(writer, inputs, groups, engines, make_rows, EVAL, metrics_by_source)
