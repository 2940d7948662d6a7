"""The stage kinds, each declared once: its name (= its folder in iter-NNN/), output schema, the config keys its
fingerprint covers, its inputs, the module that runs it and where it runs.

Everything else derives from `KINDS`: the store's folders and table schemas, fingerprints and staleness
(selftrain.plan), the in-process and subprocess entry points (selftrain.stages), the CLI's stage choices, the
Prefect tasks (tasks/stages.py) and flows. A method (selftrain.methods) is a DAG of these kinds.

Imports nothing of selftrain but schemas and the registry helpers, so that every layer can read it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import pyarrow as pa

from selftrain import schemas
from selftrain.registry import UnknownNameError, did_you_mean

# A predicate on the run's Config (selftrain.config). Named by its role, not its type: the config layer reads
# this module (placement is generated from KINDS), so this one must not name config's types, even for a checker.
ConfigTest = Callable[[Any], bool]

# In an Input, the method's policy stage (the one whose adapter samples, judges and is evaluated): `train` for
# the preference methods. Stage kinds name it this way so that one kind serves methods with other trainers.
POLICY = "@policy"
# In an Input, the method's questions stage: `questions` (a draw from an existing pool) for most methods,
# `prompts` (questions the model writes itself, self-instruction) for self_rewarding_instruct.
QUESTIONS = "@questions"


class Runs(str, Enum):
    """Where a stage kind runs."""

    INLINE = "inline"  # always in the orchestrating process: no model, seconds
    ENGINE = "engine"  # loads a model: its own process on GPUs or with vLLM (engine.isolation), else inline
    TRAINER = "trainer"  # as ENGINE, and under `accelerate launch` when training.accelerate_config is set


@dataclass(frozen=True)
class Input:
    """One upstream output a stage reads."""

    stage: str  # a stage kind, or POLICY
    previous: bool = False  # from iteration i-1 (none in iteration 0)
    when: ConfigTest | None = None  # read only when this holds for the run's config


@dataclass(frozen=True)
class StageSpec:
    name: str  # also its folder name in iter-NNN/ and its Prefect task's name
    schema: pa.Schema | None  # its Parquet shards; None: files (an adapter), not a table
    keys: tuple[str, ...]  # config sections/keys its output depends on: its fingerprint covers exactly these
    inputs: tuple[Input, ...] = ()
    runs: Runs = Runs.INLINE
    # fnmatch patterns of flattened keys under `keys` that do not change the output
    ignore: tuple[str, ...] = ()
    # (pattern, holds): keys matching the pattern count only where holds(config) is true -- settings of one
    # registered part (e.g. the llm_as_judge judge's) that others never read, so that adding them left the
    # fingerprints of runs with the other parts as they were
    only_when: tuple[tuple[str, ConfigTest], ...] = ()
    doc: str = ""
    # the module that runs it: `run(cfg, inputs, writer) -> Manifest` (and, for a trainer, `train_or_keep`);
    # default selftrain.stages.<name> (the core stages); a method's own kinds name a module of its package
    # (selftrain.methods.<method>), and kinds that share one (weak/strong_answers, the sft trainers) name it
    module: str = ""
    # data-parallel: its shards are claimed with leases (selftrain.leases), so any number of workers on any
    # machines sharing the store can work it (`selftrain work`); its run() returns None in every worker but
    # the one that writes the manifest
    parallel: bool = False

    def __post_init__(self) -> None:
        if not self.module:
            object.__setattr__(self, "module", f"selftrain.stages.{self.name}")


PREVIOUS_POLICY = Input(POLICY, previous=True)

# the judge.* settings only llm_as_judge reads (added after runs with other judges were written)
LLM_JUDGE_ONLY = tuple(
    (f"judge.{k}", lambda cfg: cfg.judge.name == "llm_as_judge")
    for k in ("rubric", "samples", "temperature", "top_p", "max_tokens")
)


# logging and launch plumbing: the same adapter whatever they say
TRAINER_PLUMBING = (
    "training.report_to",
    "training.logging_steps",
    "training.accelerate_config",
    "training.save_steps",
)


def model_keys(*own: str) -> tuple[str, ...]:
    """The keys of a stage that runs the model: the model, its prompt and engine, the seed, and its own."""
    return ("model.path", "model.dtype", "prompt", *own, "engine.name", "run.seed")


def engine(
    name: str,
    schema: pa.Schema,
    own: tuple[str, ...],
    inputs: tuple[Input, ...],
    doc: str,
    **more: Any,
) -> StageSpec:
    """A stage that runs the model: its fingerprint covers the model's keys (model_keys) and its `own`."""
    return StageSpec(name, schema, model_keys(*own), inputs, Runs.ENGINE, doc=doc, **more)


def trainer(
    name: str,
    data: str,
    continues: ConfigTest,
    doc: str,
    own: tuple[str, ...] = (),
    module: str = "",
) -> StageSpec:
    """A stage that trains the policy's LoRA adapter on the stage `data`'s rows (its first input), continuing
    the policy of iteration i-1 where `continues` holds (else a fresh adapter on the base model)."""
    return StageSpec(
        name=name,
        schema=None,
        keys=("model.path", "model.dtype", "training", *own, "run.seed"),
        inputs=(Input(data), Input(POLICY, previous=True, when=continues)),
        runs=Runs.TRAINER,
        ignore=TRAINER_PLUMBING,
        doc=doc,
        module=module,
    )


def sft_trainer(name: str, data: str, doc: str) -> StageSpec:
    """An SFT stage (selftrain.stages.sft's trainer) on `data`'s (prompt, chosen) rows; sft.train_from picks a
    fresh adapter on the base model or the policy of iteration i-1 continued."""
    return trainer(
        name,
        data,
        own=("sft",),
        continues=lambda cfg: cfg.sft.train_from == "previous",
        doc=doc,
        module="selftrain.stages.sft",
    )


KINDS: dict[str, StageSpec] = {
    s.name: s
    for s in (
        # data: the questions every method starts from
        StageSpec(
            name="questions",
            schema=schemas.QUESTIONS,
            # data.eval: the contamination guard drops training questions that are evaluation questions
            keys=(
                "data.train",
                "data.eval",
                "data.questions_per_iteration",
                "data.mix",
                "data.shard_size",
                "run.seed",
            ),
            # the guard reads every row of an eval source whatever its limit, so a limit does not change the output
            ignore=("data.eval.*.limit",),
            doc="this iteration's training questions (a seeded draw from data.train, minus evaluation questions)",
        ),
        # self-instruction (Self-Rewarding): new questions written by the model from k-shot seed questions
        # self-instruction (Self-Rewarding): new questions written by the model from k-shot seed questions
        engine(
            "prompts",
            schemas.QUESTIONS,
            # the seed pool is data.train (contamination-guarded like `questions`); data.eval: the guard
            ("self_instruct", "data.train", "data.eval", "data.shard_size"),
            (Input(POLICY, previous=True, when=lambda cfg: cfg.self_instruct.generator == "policy"),),
            "questions the model writes itself from k-shot seed questions, deduplicated against the seed pool "
            "and every evaluation set, filtered, with their provenance",
            ignore=("data.eval.*.limit",),
            module="selftrain.methods.self_rewarding.prompts",
        ),
        # the preference methods (core_po, sc_po): sample -> score -> pairs -> train -> evaluate
        engine(
            "sample",
            schemas.SAMPLES,
            ("sampling",),
            # the policy iteration i-1 trained samples (the base model in iteration 0)
            (Input(QUESTIONS), PREVIOUS_POLICY),
            "sampling.n completions per question from the current policy",
            parallel=True,
        ),
        # self-evaluation: the policy judges its own samples
        engine(
            "score",
            schemas.SCORES,
            ("judge",),
            (Input("sample"), PREVIOUS_POLICY),
            "the judge's confidence in each sample",
            parallel=True,
            only_when=LLM_JUDGE_ONLY,
        ),
        # no model: seconds, in the orchestrating process
        StageSpec(
            name="pairs",
            schema=schemas.PAIRS,
            keys=("pairs",),
            inputs=(Input("score"), Input("sample")),
            doc="preference pairs (or chosen rows) built from the scores",
        ),
        trainer(
            "train",
            "pairs",
            continues=lambda cfg: cfg.training.init == "previous",
            doc="a LoRA adapter trained on the pairs (DPO, RPO or SFT: training.loss)",
        ),
        # held-out accuracy: greedy and best-of-K; judge and run.seed: best-of-K candidates are sampled with
        # per-shard seeds and picked by the judge
        engine(
            "evaluate",
            schemas.EVAL,
            ("evaluation", "data.eval", "judge"),
            (Input(POLICY),),
            "accuracy of this iteration's policy (and in iteration 0 the base model) on data.eval",
            parallel=True,
            only_when=LLM_JUDGE_ONLY,
        ),
        # STaSC (self-taught self-correction): initial -> correct -> filter -> sft -> evaluate_correction
        engine(
            "initial",
            schemas.SAMPLES,
            ("stasc.initial", "stasc.initial_answer_with_new_model"),
            (
                Input(QUESTIONS),
                Input(POLICY, previous=True, when=lambda cfg: cfg.stasc.initial_answer_with_new_model),
            ),
            "stasc.initial.n initial answers per question (by M0, or the newest policy)",
            parallel=True,
            module="selftrain.methods.stasc.initial",
        ),
        # self-correction: the current policy M(i-1) corrects each initial answer, whichever model wrote them
        engine(
            "correct",
            schemas.CORRECTIONS,
            ("stasc.correction",),
            (Input(QUESTIONS), Input("initial"), PREVIOUS_POLICY),
            "stasc.correction.n corrections of each initial answer by the current policy",
            module="selftrain.methods.stasc.correct",
        ),
        # gold-based reward, no model
        StageSpec(
            name="filter",
            module="selftrain.methods.stasc.filter",
            schema=schemas.SFT_EXAMPLES,
            keys=("stasc.reward", "stasc.only_better_correction"),
            inputs=(Input(QUESTIONS), Input("correct")),
            doc="the corrections that improved by the gold-based reward, as SFT examples",
        ),
        sft_trainer("sft", "filter", "a LoRA adapter fine-tuned (SFT) on the kept examples"),
        engine(
            "evaluate_correction",
            schemas.CORRECTION_EVAL,
            ("evaluation", "data.eval"),
            (Input(POLICY),),
            "accuracy of the initial and the corrected answer, and the correction rates, on data.eval",
            module="selftrain.methods.stasc.evaluate_correction",
        ),
        # GSI (guided self-improvement): guided_sample -> rationales -> rationale_sft -> evaluate
        engine(
            "guided_sample",
            schemas.GUIDED_SAMPLES,
            ("gsi",),
            (Input("questions"), PREVIOUS_POLICY),
            "gsi.sampling.n samples per question from the current policy, graded against the gold answer; "
            "the questions with fewer than gsi.min_correct right resampled with guidance",
            module="selftrain.methods.gsi.guided_sample",
        ),
        # gold-graded keep, no model: cumulative over the iterations (STaR trains on all kept so far)
        StageSpec(
            name="rationales",
            module="selftrain.methods.gsi.rationales",
            schema=schemas.RATIONALES,
            keys=("gsi.sampling.n", "data.shard_size"),  # n: the report's pass rates; shard_size: the shards
            inputs=(Input("questions"), Input("guided_sample"), Input("rationales", previous=True)),
            doc="every right rationale so far (this iteration's added), and the iteration's tail report",
        ),
        sft_trainer(
            "rationale_sft",
            "rationales",
            "a LoRA adapter fine-tuned (SFT) on every kept rationale so far (GSI: from the base model)",
        ),
        # W2S (weak-to-strong): weak_sft -> weak_answers, strong_answers -> agree -> strong_sft (stage I) ->
        # stage2_sample -> w2s_pairs -> w2s_dpo (stage II) -> w2s_evaluate; train_1/train_2: selftrain.methods.w2s.core.split
        StageSpec(
            name="weak_sft",
            module="selftrain.methods.w2s.weak_sft",
            schema=None,
            keys=("w2s.weak", "w2s.train_1_size", "prompt", "training", "run.seed"),
            inputs=(Input("questions"),),
            runs=Runs.TRAINER,
            ignore=TRAINER_PLUMBING,
            doc="the weak model (w2s.weak) fine-tuned (LoRA SFT) on the gold solutions of train_1",
        ),
        StageSpec(
            name="weak_answers",
            module="selftrain.methods.w2s.answers",
            schema=schemas.SAMPLES,
            keys=("w2s.weak", "w2s.train_1_size", "w2s.max_tokens", "prompt", "engine.name", "run.seed"),
            inputs=(Input("questions"), Input("weak_sft")),
            runs=Runs.ENGINE,
            doc="the fine-tuned weak model's greedy answer to each train_2 question",
        ),
        engine(
            "strong_answers",
            schemas.SAMPLES,
            ("w2s.train_1_size", "w2s.few_shot", "w2s.max_tokens"),
            (Input("questions"),),
            "the strong base model's greedy few-shot answer (w2s.few_shot train_1 examples) to each train_2 "
            "question",
            module="selftrain.methods.w2s.answers",
        ),
        StageSpec(
            name="agree",
            module="selftrain.methods.w2s.agree",
            schema=schemas.W2S_SFT,
            keys=("w2s.train_1_size", "data.shard_size"),
            inputs=(Input("questions"), Input("weak_answers"), Input("strong_answers")),
            doc="the train_2 questions where both gave the same non-empty final answer, both rationales as SFT rows",
        ),
        sft_trainer(
            "strong_sft", "agree", "stage I: the strong model fine-tuned (LoRA SFT) on the agreed rows"
        ),
        engine(
            "stage2_sample",
            schemas.SAMPLES,
            ("w2s.train_1_size", "w2s.stage2.sampling"),
            (Input("questions"), Input("strong_sft")),
            "w2s.stage2.sampling.n samples per train_2 question from the stage-I model",
            module="selftrain.methods.w2s.stage2_sample",
        ),
        StageSpec(
            name="w2s_pairs",
            module="selftrain.methods.w2s.pairs",
            schema=schemas.W2S_PAIRS,
            keys=("w2s.train_1_size", "w2s.stage2.min_confidence", "w2s.stage2.strong_confidence"),
            inputs=(Input("questions"), Input("weak_answers"), Input("stage2_sample")),
            doc="stage II's pairs: majority vote of the samples, confidence, weak vs strong (selftrain.methods.w2s.core.w2s_pair)",
        ),
        StageSpec(
            name="w2s_dpo",
            module="selftrain.methods.w2s.dpo",
            schema=None,
            keys=("model.path", "model.dtype", "training", "w2s.loss", "run.seed"),
            inputs=(Input("w2s_pairs"), Input("strong_sft")),
            runs=Runs.TRAINER,
            # forced by the stage: DPO continuing the stage-I adapter, anchored at it
            ignore=(*TRAINER_PLUMBING, "training.init", "training.reference", "training.loss"),
            doc="stage II: the stage-I adapter trained on with DPO on the pairs",
        ),
        engine(
            "w2s_evaluate",
            schemas.EVAL,
            ("evaluation", "data.eval", "w2s.weak"),
            (Input("weak_sft"), Input("strong_sft"), Input(POLICY)),
            "greedy accuracy on data.eval of the weak model, the strong base, stage I and stage II",
            module="selftrain.methods.w2s.evaluate",
        ),
    )
}

STAGES: tuple[str, ...] = tuple(KINDS)


def kind(name: str) -> StageSpec:
    """The stage kind `name`; an unknown name is an error that suggests the closest one."""
    if name not in KINDS:
        raise UnknownNameError(f"unknown stage '{name}'{did_you_mean(name, list(KINDS))}")
    return KINDS[name]
