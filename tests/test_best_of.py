"""Best-of-K evaluation (evaluation.best_of): K candidates per eval question, the run's judge picks one."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import pytest

from selftrain.config import Config
from selftrain.engines.base import Completion
from selftrain.stages.evaluate import best_of_rows, metrics_by_source

from .conftest import cli, tiny_recipe, write_recipe


class _FixedEngine:
    """Returns the given completions for every prompt; the self-consistency judge never calls the model."""

    tokenizer = None

    def __init__(self, texts: list[str]):
        self.texts = texts

    def generate(self, prompts, spec):
        assert spec.n == len(self.texts) and spec.temperature == 0.7 and spec.top_p == 0.9
        return [[Completion(t, 5, "stop") for t in self.texts] for _ in prompts]


def test_best_of_keeps_every_candidate_and_selects_the_judges_argmax():
    cfg = Config.model_validate({"evaluation": {"best_of": 4}, "judge": {"name": "self_consistency"}})
    q = {"task": "arithmetic", "choices": None, "reference": "3", "source": "s", "model": "policy"}
    group = [{**q, "question_id": "a", "question": "1+2=?"}, {**q, "question_id": "b", "question": "2+1=?"}]
    engine = _FixedEngine([" #### 4", " #### 3", " #### 3", " #### 5"])  # majority: 3, first at index 1
    rows = best_of_rows(cfg, group, ["p1", "p2"], engine, None, seed=0)
    assert len(rows) == 8 and {r["decoding"] for r in rows} == {"best_of"}
    for qid in ("a", "b"):
        cands = [r for r in rows if r["question_id"] == qid]
        assert [r["judge_score"] for r in cands] == [0.25, 0.5, 0.5, 0.25]
        assert [r["selected"] for r in cands] == [False, True, False, False]  # ties: the lowest index
        assert [r["correct"] for r in cands] == [False, True, True, False]


def test_metrics_report_best_of_beside_greedy():
    def row(decoding, correct, selected=True, index=0, source="s"):
        return {
            "model": "policy",
            "decoding": decoding,
            "source": source,
            "sample_index": index,
            "correct": correct,
            "selected": selected,
        }

    rows = [row("greedy", False), row("greedy", True), row("greedy", True, source="t")]
    assert metrics_by_source(rows)["policy"]["s"] == {"n": 2, "correct": 1, "accuracy": 0.5}
    rows += [row("best_of", True, True, 0), row("best_of", False, False, 1)]
    rows += [row("best_of", True, False, 0), row("best_of", True, True, 1)]
    cell = metrics_by_source(rows)["policy"]["s"]
    assert cell["accuracy"] == 0.5 and cell["best_of_k"] == 2
    assert cell["best_of_correct"] == 2 and cell["best_of_accuracy"] == 1.0


@pytest.mark.slow
def test_best_of_on_the_tiny_model(tmp_path, tiny_model):
    """One iteration with best_of 3 and the CORE-PO judge: K candidate rows per question and model, the selected
    one is the argmax of the judge's scores, those scores are what the judge gives the same candidates when
    called as the score stage calls it, and the CLI shows best-of accuracy beside greedy."""
    from selftrain.data.sources import load_source
    from selftrain.engines import load_engine
    from selftrain.grading import extract_answer
    from selftrain.judges import JUDGES, Judging
    from selftrain.prompts import PromptBuilder
    from selftrain.stages.common import shard_seed
    from selftrain.store import METRICS, RunStore, read_shard

    recipe = tiny_recipe(
        tmp_path,
        tiny_model,
        data={"eval": [{"name": "synthetic_arithmetic", "split": "test", "limit": 4}]},
        evaluation={"batch_size": 2, "best_of": 3},
    )
    recipe["training"]["max_steps"] = 2
    proc = cli("run", str(write_recipe(tmp_path / "r.yaml", recipe)), "--no-prefect")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best-of-3" in proc.stdout

    store = RunStore(tmp_path / "runs" / "t")
    manifest = store.manifest(0, "evaluate")
    stage_dir = store.stage_dir(0, "evaluate")
    cfg = Config.model_validate(recipe)
    questions = {q["question_id"]: q for q in load_source(cfg.data.eval[0], cfg.run.seed)}
    engine = load_engine(cfg, None)  # the base model's rows are re-judged: no adapter to load
    builder = PromptBuilder(engine.tokenizer, cfg.prompt.template, cfg.prompt.system)
    all_rows = []
    for index, shard in enumerate(manifest.shards):
        rows = read_shard(stage_dir / shard.name).to_pylist()
        all_rows += rows
        best = [r for r in rows if r["decoding"] == "best_of"]
        assert Counter(r["question_id"] for r in best) == {q: 3 for q in {r["question_id"] for r in rows}}
        by_q = defaultdict(list)
        for r in best:
            by_q[r["question_id"]].append(r)
        for cands in by_q.values():
            assert [r["sample_index"] for r in cands] == [0, 1, 2]
            scores = [r["judge_score"] for r in cands]
            assert [r["selected"] for r in cands] == [i == scores.index(max(scores)) for i in range(3)]
        if rows[0]["model"] != "base":
            continue
        # the same call the score stage makes, on the stored candidates, with the shard's seed
        local = [{**questions[qid], "question_id": str(j)} for j, qid in enumerate(by_q)]
        samples = {
            str(j): [
                {
                    "question_id": str(j),
                    "sample_index": r["sample_index"],
                    "completion": r["completion"],
                    "finish_reason": r["finish_reason"],
                    "answer": extract_answer(questions[qid]["task"], r["completion"], None),
                }
                for r in by_q[qid]
            ]
            for j, qid in enumerate(by_q)
        }
        judged = JUDGES.get("core_po")(
            Judging(cfg.judge, local, samples, engine, builder, shard_seed(0, 0, index))
        )
        stored = [r["judge_score"] for qid in by_q for r in by_q[qid]]
        assert [r["score"] for r in judged] == pytest.approx(stored, abs=1e-5)
    engine.close()

    # the judge really ranked something: scored candidates, not all truncated (score 0) or tied
    assert len({r["judge_score"] for r in all_rows if r["decoding"] == "best_of"}) > 3
    for model in ("base", "policy"):
        selected = [
            r for r in all_rows if r["model"] == model and r["decoding"] == "best_of" and r["selected"]
        ]
        cell = manifest.stats["metrics"][model]["synthetic_arithmetic"]
        assert len(selected) == 4 and cell["best_of_k"] == 3
        assert cell["best_of_correct"] == sum(r["correct"] for r in selected)
    assert json.loads((stage_dir / METRICS).read_text()) == manifest.stats["metrics"]
    status = cli("status", str(store.run_dir))
    assert status.returncode == 0 and "best-of-3" in status.stdout
