"""GSI's kept rationales: this iteration's right samples (plain and guided, graded against the gold answer)
added to every rationale kept so far (this stage's output of iteration i-1), each distinct (question,
rationale) once, trained on with the plain question prompt (hints never reach the SFT data). Its manifest holds
the iteration's tail report (selftrain.methods.gsi.core.tail_report), which `selftrain run` and `status` print."""

from __future__ import annotations

from selftrain.config import Config
from selftrain.methods.gsi.core import tail_report
from selftrain.schemas import RATIONALES
from selftrain.stages.common import StageInputs, chunks, finish, write_sharded
from selftrain.store import Manifest, StageWriter


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    questions = inputs.table("questions").to_pylist()
    samples = inputs.table("guided_sample").to_pylist()
    earlier = inputs.table("rationales", inputs.iteration - 1).to_pylist() if inputs.iteration else []
    seen = {(r["question_id"], r["chosen"]) for r in earlier}
    new = []
    for s in samples:
        key = (s["question_id"], s["completion"])
        if s["correct"] and key not in seen:
            seen.add(key)
            new.append(
                {
                    "question_id": s["question_id"],
                    "iteration": inputs.iteration,
                    "round": s["round"],
                    "guidance": s["guidance"],
                    "prompt": s["train_prompt"],
                    "chosen": s["completion"],
                    "response_tokens": s["response_tokens"],
                }
            )
    rows = earlier + new
    groups = list(chunks(rows, cfg.data.shard_size * cfg.gsi.sampling.n)) or [[]]
    shards = write_sharded(
        writer, inputs, groups, lambda g, i: g, RATIONALES, f"rationales iter-{inputs.iteration:03d}"
    )
    stats = {
        "examples": len(rows),
        "new_examples": len(new),
        "new_guided": sum(r["round"] > 0 for r in new),
        "report": tail_report(questions, samples, cfg.gsi.sampling.n),
    }
    return finish(writer, inputs, shards, stats)
