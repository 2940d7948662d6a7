"""W2S stage I's filter, no model: the train_2 questions where the weak and the strong answer have the same
non-empty final answer (selftrain.methods.w2s.core.agree), each as two SFT rows, the weak and the strong rationale, both with
the plain question prompt."""

from __future__ import annotations

from selftrain.config import Config
from selftrain.methods.w2s.core import agree, final_answer, split
from selftrain.schemas import W2S_SFT
from selftrain.stages.common import StageInputs, chunks, finish, write_sharded
from selftrain.store import Manifest, StageWriter


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    _, train_2 = split(inputs.table("questions").to_pylist(), cfg.w2s.train_1_size)
    weak = {r["question_id"]: r for r in inputs.table("weak_answers").to_pylist()}
    strong = {r["question_id"]: r for r in inputs.table("strong_answers").to_pylist()}

    def make_rows(group: list[dict], index: int) -> list[dict]:
        del index
        out = []
        for q in group:
            w, s = weak.get(q["question_id"]), strong.get(q["question_id"])
            if w is None or s is None or not agree(w, s):
                continue
            for source, r in (("weak", w), ("strong", s)):
                out.append(
                    {
                        "question_id": q["question_id"],
                        "source": source,
                        "prompt": r["prompt"],
                        "chosen": r["completion"],
                        "answer": final_answer(r["answer"]),
                    }
                )
        return out

    groups = list(chunks(train_2, cfg.data.shard_size))
    shards = write_sharded(writer, inputs, groups, make_rows, W2S_SFT, f"agree iter-{inputs.iteration:03d}")
    examples = sum(sh.rows for sh in shards)
    stats = {
        "questions": len(train_2),
        "weak_answered": sum(bool(final_answer(r["answer"])) for r in weak.values()),
        "strong_answered": sum(bool(final_answer(r["answer"])) for r in strong.values()),
        "agreed": examples // 2,
        "examples": examples,
    }
    return finish(writer, inputs, shards, stats)
