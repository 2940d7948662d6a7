"""Stage 6, evaluate: greedy accuracy of this iteration's policy on held-out questions, per source.

In iteration 0 the base model is evaluated too (`evaluation.baseline`), so every run shows its starting point.
"""

from __future__ import annotations

import json
from collections import defaultdict

from selftrain.config import Config
from selftrain.data.sources import load_source
from selftrain.engines.base import SamplingSpec
from selftrain.grading import grade
from selftrain.schemas import EVAL
from selftrain.stages.common import StageInputs, chunks, finish, read_shards, write_sharded
from selftrain.stages.sample import LazyEngine
from selftrain.store import Manifest, StageWriter, atomic_write_text, file_info


def metrics_by_source(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """{model: {source: {n, correct, accuracy}}}"""
    acc: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for r in rows:
        cell = acc[r["model"]][r["source"]]
        cell[0] += 1
        cell[1] += bool(r["correct"])
    return {
        model: {src: {"n": n, "correct": c, "accuracy": round(c / n, 6)} for src, (n, c) in by_src.items()}
        for model, by_src in acc.items()
    }


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    questions: list[dict] = []
    for spec in cfg.data.eval:
        questions.extend(load_source(spec, cfg.run.seed))
    models = ["policy"]
    if inputs.iteration == 0 and cfg.evaluation.baseline:
        models.insert(0, "base")
    engines = {
        "base": LazyEngine(cfg, None),
        "policy": LazyEngine(cfg, str(inputs.store.stage_dir(inputs.iteration, "train"))),
    }
    groups = [
        [{**q, "model": m} for q in chunk]
        for m in models
        for chunk in chunks(questions, cfg.evaluation.batch_size)
    ]
    greedy = SamplingSpec(n=1, temperature=0.0, top_p=1.0, max_tokens=cfg.evaluation.max_tokens, seed=0)

    def make_rows(group: list[dict], index: int) -> list[dict]:
        lazy = engines[group[0]["model"]]
        for other, e in engines.items():  # one model in memory at a time
            if other != group[0]["model"]:
                e.close()
        prompts = [lazy.builder.question(q["question"], q["choices"]) for q in group]
        outs = lazy.engine.generate(prompts, greedy)
        rows = []
        for q, comps in zip(group, outs, strict=True):
            answer, ok = grade(q["task"], comps[0].text, q["reference"], q["choices"])
            rows.append(
                {
                    "model": q["model"],
                    "source": q["source"],
                    "question_id": q["question_id"],
                    "completion": comps[0].text,
                    "answer": answer,
                    "reference": q["reference"],
                    "correct": ok,
                }
            )
        return rows

    try:
        shards = write_sharded(
            writer, inputs, groups, make_rows, EVAL, f"evaluate iter-{inputs.iteration:03d}"
        )
    finally:
        for e in engines.values():
            e.close()
    metrics = metrics_by_source(read_shards(writer.dir, shards, EVAL).to_pylist())
    path = writer.dir / "metrics.json"
    atomic_write_text(path, json.dumps(metrics, indent=2))
    files = [file_info(path)]
    return finish(writer, inputs, shards, {"metrics": metrics}, files)
