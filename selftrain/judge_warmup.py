"""The digit-sums bootstrap's judge warm-up: teach the tiny model CORE-PO's plain judge formats on its OWN graded
samples, after pre-training landed in the band (issue 19).

Synthetic corruptions taught the judge nothing (within-question AUROC 0.51: a corrupted solution does not look
like the model's own mistakes). Here the base samples `samples` answers per pre-training question, each is graded
against the reference (pre-training data carries labels; self-training never reads them), and judge rows are
built exactly as the core_po judge will build them at scoring time: the reasoning judge beside
`max_context_reasonings` reasonings drawn from ALL of the question's own samples (the selected one included),
and the answer judge. Solve rows stay in the mix so that the policy is not forgotten. The judge's within-question
AUROC on fresh questions is measured before and after, beside self-consistency's on the same samples.
"""

from __future__ import annotations

import logging
import random
import time

from selftrain.bandcheck import _generate
from selftrain.config import ConfigError, JudgeWarmupConfig
from selftrain.data import synthetic
from selftrain.diagnostics import within_question_auroc
from selftrain.engines.hf import option_probs
from selftrain.judges import two_way
from selftrain.packing import pack_batch
from selftrain.progress import track
from selftrain.prompts import PromptBuilder

log = logging.getLogger(__name__)

# (question, [(reasoning, answer, right)]) for one question's parsed own samples
Group = tuple[synthetic.DigitSum, list[tuple[str, str, bool]]]


def own_samples(
    model, tokenizer, builder: PromptBuilder, problems: list, cfg: JudgeWarmupConfig
) -> list[Group]:  # noqa: ANN001
    """The model's sampled solutions per question, parsed and graded; unparsable ones dropped (the core_po
    judge gives them score 0 and never shows them as context)."""
    model.eval()
    outs = _generate(
        model, tokenizer, [builder.question(p.question) for p in problems], cfg.samples, cfg.temperature
    )
    groups = []
    for p, texts in zip(problems, outs, strict=True):
        parsed = [builder.parse(t) for t in texts]
        graded = [
            (x.reasoning, x.answer, x.answer == str(p.answer())) for x in parsed if x.reasoning and x.answer
        ]
        groups.append((p, graded))
    return groups


def judge_prompts(
    builder: PromptBuilder, group: Group, i: int, context: int, rng: random.Random
) -> tuple[str, str]:
    """The reasoning-judge and answer-judge prompts for sample `i`, as judges.core_po renders them."""
    p, graded = group
    reasoning, answer, _ = graded[i]
    pool = [r for r, _, _ in graded]
    shown = rng.sample(pool, min(context, len(pool)))
    return builder.reasoning_judge(p.question, reasoning, shown), builder.answer_judge(
        p.question, reasoning, answer
    )


def judge_aurocs(model, tokenizer, builder: PromptBuilder, groups: list[Group], context: int) -> dict:  # noqa: ANN001
    """Within-question AUROC of the CORE-PO score (P(True) of reasoning x answer), of each judge alone, and of
    self-consistency (the sample's answer share) on the same samples."""
    rng = random.Random(1)
    keys, reasoning_prompts, answer_prompts = [], [], []
    for q, group in enumerate(groups):
        for i in range(len(group[1])):
            r, a = judge_prompts(builder, group, i, context, rng)
            reasoning_prompts.append(r)
            answer_prompts.append(a)
            keys.append(q)

    def p_true(prompts: list[str]) -> list[float]:  # as the core_po judge reads it
        return [two_way(pr) for pr in option_probs(model, tokenizer, prompts, ("A", "B"), 128)]

    model.eval()
    reasoning, answer = p_true(reasoning_prompts), p_true(answer_prompts)
    labels = [ok for _, g in groups for _, _, ok in g]
    share = [sum(b == a for _, b, _ in g) / len(g) for _, g in groups for _, a, _ in g]

    def within(scores: list[float]) -> float | None:
        by: dict[int, tuple[list, list]] = {}
        for s, y, q in zip(scores, labels, keys, strict=True):
            by.setdefault(q, ([], []))[0].append(s)
            by[q][1].append(y)
        value = within_question_auroc(by.values())
        return None if value is None else round(value, 4)

    return {
        "core_po": within([x * y for x, y in zip(reasoning, answer, strict=True)]),
        "reasoning": within(reasoning),
        "answer": within(answer),
        "self_consistency": within(share),
        "sample_accuracy": round(sum(labels) / max(1, len(labels)), 4),
    }


def train_judge(
    model,
    tokenizer,
    builder: PromptBuilder,
    cfg: JudgeWarmupConfig,
    train: list[Group],
    solve_row,
    rng: random.Random,
) -> None:  # noqa: ANN001
    """`cfg.steps` AdamW steps on judge rows (target A if the selected own sample is right, else B) mixed with
    solve rows; each row draws its question, sample, context and format afresh."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.1)
    model.train()
    for _ in track(range(cfg.steps), "judge warm-up", unit="step"):
        batch = []
        for _ in range(cfg.batch_size):
            if rng.random() < cfg.solve_fraction:
                batch.append(solve_row(rng))
                continue
            group = train[rng.randrange(len(train))]
            i = rng.randrange(len(group[1]))
            reasoning_prompt, answer_prompt = judge_prompts(
                builder, group, i, cfg.max_context_reasonings, rng
            )
            prompt = answer_prompt if rng.random() < cfg.answer_fraction else reasoning_prompt
            batch.append((prompt, "A" if group[1][i][2] else "B"))
        model(**pack_batch(tokenizer, batch, 128)).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)


def warm_up_judge(
    model, tokenizer, builder: PromptBuilder, cfg: JudgeWarmupConfig, solve_row, seed: int
) -> dict:  # noqa: ANN001
    """Train the judge formats on the model's own graded samples for `cfg.steps` steps; `solve_row(rng)` gives
    one pre-training solve row. Returns the within-question AUROCs before and after."""
    import torch

    start = time.time()
    rng = random.Random(f"judge-warmup-{seed}")
    problems: list = []
    # the self-training pool's shape (4-8 operands), never the held-out fifth
    while len(problems) < cfg.questions:
        p = synthetic.random_digit_sum(rng, synthetic.EASY_OPERANDS[0], synthetic.HARD_OPERANDS[1])
        if not synthetic.digit_sum_held_out(p):
            problems.append(p)
    torch.manual_seed(seed)
    train = [g for g in own_samples(model, tokenizer, builder, problems, cfg) if len(g[1]) >= 2]
    if not train:
        raise ConfigError(
            "model.bootstrap.judge_warmup: no question got two parsable own samples; the base does not write "
            "'#### N' answers yet, so there is nothing to grade (pre-train it longer)"
        )
    probe = own_samples(
        model, tokenizer, builder, synthetic.digit_sums("judge-probe", cfg.probe_questions, seed), cfg
    )
    before = judge_aurocs(model, tokenizer, builder, probe, cfg.max_context_reasonings)
    log.info(
        "judge warm-up: %d questions sampled (%.0fs); within-question AUROC before: %s",
        len(train),
        time.time() - start,
        before,
    )
    train_judge(model, tokenizer, builder, cfg, train, solve_row, rng)
    after = judge_aurocs(model, tokenizer, builder, probe, cfg.max_context_reasonings)
    log.info(
        "judge warm-up: %d steps (%.0fs); within-question AUROC after: %s",
        cfg.steps,
        time.time() - start,
        after,
    )
    return {"before": before, "after": after}
