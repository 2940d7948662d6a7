"""W2S stage II's pairs, no model: per train_2 question the stage-I model's samples' majority vote and
confidence, and the pair rule (selftrain.methods.w2s.core.w2s_pair) against the weak model's response."""

from __future__ import annotations

from collections import Counter, defaultdict

from selftrain.config import Config
from selftrain.methods.w2s.core import split, w2s_pair
from selftrain.schemas import W2S_PAIRS
from selftrain.stages.common import StageInputs, chunks, finish, write_sharded
from selftrain.store import Manifest, StageWriter


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    st = cfg.w2s.stage2
    _, train_2 = split(inputs.table("questions").to_pylist(), cfg.w2s.train_1_size)
    weak = {r["question_id"]: r for r in inputs.table("weak_answers").to_pylist()}
    samples: dict[str, list[dict]] = defaultdict(list)
    for r in inputs.table("stage2_sample").to_pylist():
        samples[r["question_id"]].append(r)
    # every question's decision up front (no model, cheap): the stats count all of them, resumed or not
    decisions = {}
    for q in train_2:
        qid = q["question_id"]
        if qid in weak and samples.get(qid):
            ss = sorted(samples[qid], key=lambda r: r["sample_index"])
            decisions[qid] = (
                ss[0]["prompt"],
                w2s_pair(weak[qid], ss, st.min_confidence, st.strong_confidence),
            )

    def make_rows(group: list[dict], index: int) -> list[dict]:
        del index
        out = []
        for q in group:
            prompt, d = decisions.get(q["question_id"], ("", {"chosen": None}))
            if d["chosen"] is not None:
                row = {k: d[k] for k in ("chosen", "rejected", "rule", "majority", "confidence")}
                out.append({"question_id": q["question_id"], "prompt": prompt, **row})
        return out

    groups = list(chunks(train_2, cfg.data.shard_size))
    desc = f"w2s_pairs iter-{inputs.iteration:03d}"
    shards = write_sharded(writer, inputs, groups, make_rows, W2S_PAIRS, desc)
    rules = Counter(d["rule"] for _, d in decisions.values())
    return finish(writer, inputs, shards, {"pairs": sum(sh.rows for sh in shards), "rules": dict(rules)})
