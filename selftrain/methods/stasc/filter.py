"""STaSC's reward and filter: each (initial answer, correction) rewarded against the gold answer
(stasc.reward: in_acc or exact_match; gold is used here, as in the paper), and the corrections that improved
kept (stasc.only_better_correction) as SFT examples: correction prompt (question + initial) -> correction."""

from __future__ import annotations

from collections import defaultdict

from selftrain.config import Config
from selftrain.methods.stasc.core import kept, reward, transitions
from selftrain.schemas import SFT_EXAMPLES
from selftrain.stages.common import StageInputs, chunks, finish, write_sharded
from selftrain.store import Manifest, StageWriter


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    s = cfg.stasc
    questions = inputs.questions_table().to_pylist()
    by_question: dict[str, list[dict]] = defaultdict(list)
    for row in inputs.table("correct").to_pylist():
        by_question[row["question_id"]].append(row)
    by_id = {q["question_id"]: q for q in questions}
    rewarded = {
        qid: [
            (r, reward(s.reward, by_id[qid], r["initial"]), reward(s.reward, by_id[qid], r["completion"]))
            for r in rows
        ]
        for qid, rows in by_question.items()
    }

    def make_rows(group: list[dict], index: int) -> list[dict]:
        del index
        out = []
        for q in group:
            for r, before, after in rewarded.get(q["question_id"], []):
                if kept(before, after, s.only_better_correction):
                    out.append(
                        {
                            "question_id": r["question_id"],
                            "sample_index": r["sample_index"],
                            "correction_index": r["correction_index"],
                            "prompt": r["prompt"],
                            "chosen": r["completion"],
                            "initial_reward": before,
                            "correction_reward": after,
                        }
                    )
        return out

    groups = list(chunks(questions, cfg.data.shard_size))
    shards = write_sharded(
        writer, inputs, groups, make_rows, SFT_EXAMPLES, f"filter iter-{inputs.iteration:03d}"
    )
    moves = transitions([(b, a) for rows in rewarded.values() for _, b, a in rows])
    stats = {"examples": sum(sh.rows for sh in shards), "corrections": sum(moves.values()), **moves}
    return finish(writer, inputs, shards, stats)
