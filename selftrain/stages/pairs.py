"""Stage 4, pairs: scored samples -> DPO preference pairs with TRL's column names (prompt/chosen/rejected)."""

from __future__ import annotations

from collections import defaultdict

from selftrain.config import Config
from selftrain.pairs import PAIR_BUILDERS, apply_filters
from selftrain.schemas import PAIRS
from selftrain.stages.common import StageInputs, chunks, finish, read_shards, write_sharded
from selftrain.store import Manifest, StageWriter


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    questions = inputs.questions_table().to_pylist()
    scores = {(r["question_id"], r["sample_index"]): r["score"] for r in inputs.table("score").to_pylist()}
    groups_by_q: dict[str, list[dict]] = defaultdict(list)
    unscored = 0
    for s in inputs.table("sample").to_pylist():
        score = scores.get((s["question_id"], s["sample_index"]), 0.0)
        if (
            score is None
        ):  # the judge gave no score (llm_as_judge: no judgment parsed): neither side of a pair
            unscored += 1
            continue
        groups_by_q[s["question_id"]].append({**s, "score": score})
    build = PAIR_BUILDERS.get(cfg.pairs.builder)

    def make_rows(group: list[dict], index: int) -> list[dict]:
        p = cfg.pairs
        return [
            row
            for q in group
            for row in apply_filters(
                build(groups_by_q[q["question_id"]], p.min_margin), p.min_chosen_score, p.max_per_question
            )
        ]

    groups = list(chunks(questions, cfg.data.shard_size))
    shards = write_sharded(writer, inputs, groups, make_rows, PAIRS, f"pairs iter-{inputs.iteration:03d}")
    t = read_shards(writer.dir, shards, PAIRS)
    stats = {
        "pairs": t.num_rows,
        "questions_with_pairs": len(set(t.column("question_id").to_pylist())),
        "questions": len(questions),
        "unscored_samples": unscored,
    }
    return finish(writer, inputs, shards, stats)
