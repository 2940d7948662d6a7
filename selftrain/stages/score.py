"""Stage 3, score: the confidence judge over each question's samples (CORE-PO P(True) by default)."""

from __future__ import annotations

import logging
import statistics
from collections import defaultdict

from selftrain.config import Config, ConfigError
from selftrain.diagnostics import judge_diagnostics, judgment_stats
from selftrain.engines.lazy import LazyEngine
from selftrain.judges import JUDGES, Judging
from selftrain.prompts import PromptBuilder
from selftrain.schemas import SCORES
from selftrain.stages.common import StageInputs, chunks, finish, read_shards, shard_seed, write_sharded
from selftrain.store import Manifest, StageWriter

log = logging.getLogger(__name__)


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    questions = inputs.questions_table().to_pylist()
    by_question: dict[str, list[dict]] = defaultdict(list)
    for s in inputs.table("sample").to_pylist():
        by_question[s["question_id"]].append(s)
    judge = JUDGES.get(cfg.judge.name)
    parse_rate = check_parse_rate(cfg, [s for group in by_question.values() for s in group])
    # the judge is the policy itself (CORE-PO judges with the model being trained)
    lazy = LazyEngine(cfg, inputs.policy_adapter())
    needs_model = judge.needs_model

    def make_rows(group: list[dict], index: int) -> list[dict]:
        seed = shard_seed(cfg.run.seed, inputs.iteration, index)
        engine, builder = (lazy.engine, lazy.builder) if needs_model else (None, None)
        return judge(Judging(cfg.judge, group, by_question, engine, builder, seed))

    try:
        groups = list(chunks(questions, cfg.data.shard_size))
        shards = write_sharded(
            writer, inputs, groups, make_rows, SCORES, f"score iter-{inputs.iteration:03d}"
        )
    finally:
        lazy.close()
    if shards is None:
        return None  # type: ignore[return-value]  # another worker writes the manifest
    t = read_shards(writer.dir, shards, SCORES)
    scores = [s for s in t.column("score").to_pylist() if s is not None]
    stats = {
        "scored": t.num_rows,
        "parse_rate": parse_rate,
        "mean_score": round(statistics.fmean(scores), 6) if scores else None,
        "zero_scores": sum(s == 0 for s in scores),
        **judgment_stats(t.select(["score", "judgment_scores"]).to_pylist()),
        **judge_diagnostics(questions, t.select(["question_id", "answer", "score"]).to_pylist()),
    }
    check_judgment_rate(cfg, stats)
    if stats.get("judge_auroc") is not None:
        within = stats.get("judge_auroc_within")
        log.info(
            "judge AUROC against the references (diagnostic only): %.3f pooled, %s within question; "
            "sample accuracy %.3f",
            stats["judge_auroc"],
            "n/a" if within is None else f"{within:.3f}",
            stats["sample_accuracy"],
        )
        if within is not None and within < 0.6:
            log.warning(
                "the judge is near chance within question (AUROC %.3f): its pairs carry little", within
            )
    return finish(writer, inputs, shards, stats)


def check_parse_rate(cfg: Config, samples: list[dict]) -> float | None:
    """The share of finished samples whose answer the judge can read: for a judge that reads the response
    format (core_po: it scores the rest 0) the format parsed, else an extracted answer. Such a judge below
    judge.min_parse_rate stops here with one line, before any model is loaded: scoring every sample 0 would
    build no pairs, train nothing and still end every stage "done"."""
    if not samples:
        return None
    reads_format = JUDGES.get(cfg.judge.name).reads_format
    if reads_format:
        parser = PromptBuilder(None, cfg.prompt.template)
        ok = sum(s["finish_reason"] == "stop" and parser.parse(s["completion"]).ok for s in samples)
    else:
        ok = sum(s["finish_reason"] == "stop" and s["answer"] is not None for s in samples)
    rate = round(ok / len(samples), 6)
    log.info("%d of %d samples (%.1f%%) are readable by the judge", ok, len(samples), 100 * rate)
    if reads_format and rate < 0.5:
        hint = (
            "the model does not write CORE-PO's response format"
            if cfg.prompt.template != "plain"
            else "the model does not end its answers with '#### N'"
        )
        if rate < cfg.judge.min_parse_rate:
            raise ConfigError(
                f"judge.min_parse_rate: only {ok} of {len(samples)} samples parse ({100 * rate:.1f}% < "
                f"{100 * cfg.judge.min_parse_rate:g}%): {hint}; set prompt.one_shot: true, raise "
                "sampling.max_tokens, or use judge.name self_consistency"
            )
        log.warning(
            "only %.1f%% of the samples parse (%s): the rest score 0%s",
            100 * rate,
            hint,
            "; NO pairs can be built and nothing will train (judge.min_parse_rate > 0 stops here)"
            if ok == 0
            else "",
        )
    return rate


def check_judgment_rate(cfg: Config, stats: dict) -> None:
    """For a judge that writes judgments (llm_as_judge): the share of them with a parsable `Score: N`.
    Below judge.min_parse_rate the stage fails in one line before its manifest is written (a model that does
    not write the rubric's score leaves every sample unscored: no pairs, nothing trained, every stage "done");
    under 50 % it warns. Known only after the judgments are written, unlike the response format."""
    if "unparsable_rate" not in stats:
        return
    rate = 1 - stats["unparsable_rate"]
    read, total = round(rate * stats["judgments"]), stats["judgments"]
    log.info("%d of %d judgments (%.1f%%) have a parsable score", read, total, 100 * rate)
    if rate < cfg.judge.min_parse_rate:
        raise ConfigError(
            f"judge.min_parse_rate: only {read} of {total} judgments have a parsable 'Score: N' "
            f"({100 * rate:.1f}% < {100 * cfg.judge.min_parse_rate:g}%): the model does not follow the "
            "rubric; try judge.rubric compact, a larger model, or judge.name self_consistency"
        )
    if rate < 0.5:
        log.warning(
            "only %.1f%% of the judgments have a parsable score: %d of %d samples got none and take no part "
            "in a pair%s",
            100 * rate,
            stats["unscored_samples"],
            stats["scored"],
            " (judge.min_parse_rate > 0 stops here)" if not cfg.judge.min_parse_rate else "",
        )
