"""Config sections of the data side: the run, the model (and the tiny model's bootstrap), data sources,
prompts, sampling, the judge and the pair builder."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from selftrain.config.base import Section


class RunConfig(Section):
    name: str = Field("tiny-cpu", description="Run folder name under store.root/runs/.")
    iterations: int = Field(
        2, ge=1, description="Number of self-training iterations (iter-000 ... iter-N-1)."
    )
    seed: int = Field(0, description="Master seed; every stage derives its own seeds from it.")
    retries: int = Field(
        0,
        ge=0,
        description="Retries of a stage that failed of something other than a user error (Prefect task retries;"
        " the same without Prefect). Safe: a retried stage resumes from its finished shards or checkpoint.",
    )
    retry_delay_seconds: float = Field(0, ge=0, description="Wait before each stage retry.")
    expect: str | None = Field(
        None,
        description="A line `selftrain run` prints beside the run's result: what this recipe measured where it "
        "was tuned (the range over seeds, the machine), so a user can tell whether their run landed in it. "
        "Read by nothing else.",
    )


class BandConfig(Section):
    """Where a self-training base has headroom (TOY-STUDIES.md): right sometimes on long chains, not reliably."""

    hard_min: float = Field(0.35, ge=0, le=1, description="Lowest hard-set (6-8 operands) greedy accuracy.")
    hard_max: float = Field(0.60, ge=0, le=1, description="Highest hard-set greedy accuracy.")
    pass_at_k_min: float = Field(0.8, ge=0, le=1, description="Lowest hard-set pass@k at `temperature`.")
    easy_min: float = Field(0.95, ge=0, le=1, description="Lowest easy-set (4-5 operands) greedy accuracy.")
    k: int = Field(8, ge=1, description="Samples per question for pass@k.")
    temperature: float = Field(0.5, gt=0, description="Sampling temperature for pass@k.")
    hard_questions: int = Field(128, ge=1, description="Held-out check questions (hard), not the eval set.")
    easy_questions: int = Field(64, ge=1, description="Held-out check questions (easy).")
    pass_questions: int = Field(64, ge=1, description="Hard questions sampled k times for pass@k.")


class JudgeWarmupConfig(Section):
    """digit_sums: after the band, train CORE-PO's plain judge formats on the model's own graded samples
    (selftrain/judge_warmup.py). Pre-training data carries labels; self-training never reads them."""

    steps: int = Field(600, ge=1, description="Warm-up steps (batches of judge and solve rows).")
    questions: int = Field(
        600, ge=1, description="Pre-training questions (4-8 operands) sampled for judge rows."
    )
    samples: int = Field(8, ge=2, description="Own samples per question, as the sample stage draws them.")
    temperature: float = Field(0.5, gt=0, description="Sampling temperature of the own samples.")
    max_context_reasonings: int = Field(
        4, ge=0, description="Reasonings shown beside the selected one; set it to the recipe's judge value."
    )
    batch_size: int = Field(64, ge=1, description="Rows per warm-up step.")
    solve_fraction: float = Field(
        0.3, ge=0, le=1, description="Share of rows that are solve rows (keep the policy)."
    )
    answer_fraction: float = Field(
        0.5, ge=0, le=1, description="Share of judge rows in the answer-judge format."
    )
    learning_rate: float = Field(6e-4, gt=0, description="AdamW learning rate (constant).")
    probe_questions: int = Field(
        150, ge=1, description="Held-out questions whose samples measure judge AUROC."
    )


class BootstrapConfig(Section):
    """How to build the tiny from-scratch model when `model.path` does not exist yet."""

    steps: int = Field(600, ge=1, description="Pre-training steps on synthetic arithmetic.")
    batch_size: int = Field(64, ge=1, description="Sequences per pre-training step.")
    learning_rate: float = Field(3e-3, gt=0, description="AdamW learning rate for pre-training.")
    hidden_size: int = Field(128, ge=8, description="Llama hidden size.")
    num_layers: int = Field(4, ge=1, description="Llama decoder layers.")
    intermediate_size: int = Field(
        0,
        ge=0,
        description="Llama MLP width; 0 = 4 x hidden_size. Digit sums: 344 (Llama's 8/3 ratio) made a "
        "pre-training step ~20% cheaper than 512 for the same progress per step.",
    )
    num_heads: int = Field(4, ge=1, description="Attention heads.")
    judge_fraction: float = Field(
        0.3, ge=0, le=1, description="Share of pre-training steps that teach the True/False judge format."
    )
    rubric_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="arithmetic: share of pre-training steps that teach the Self-Rewarding judgment format "
        "(the compact rubric -> 'Score: 5' right / 'Score: 1' wrong; for judge.name llm_as_judge).",
    )
    seed: int = Field(0, description="Seed for data and initialisation.")
    task: Literal["arithmetic", "digit_sums"] = Field(
        "arithmetic",
        description="Pre-training task: arithmetic (a+b*c, fixed steps) or digit_sums (the toy with headroom: "
        "trains until a held-out check lands in `band`, see selftrain/tiny.py).",
    )
    long_fraction: float = Field(
        0.08,
        ge=0,
        le=1,
        description="digit_sums: share of pre-training questions with 6-8 operands (else 2-5).",
    )
    threads: int = Field(0, ge=0, description="torch threads while pre-training (0 = leave as is).")
    weight_decay: float = Field(
        0.01,
        ge=0,
        description="AdamW weight decay. digit_sums: with 0.1 the mod-10 fact table appeared ~100 steps sooner "
        "(step ~450 vs ~575 with 0.01; README, 'The digit-sums toy').",
    )
    arithmetic_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="digit_sums: share of pre-training examples taken from the arithmetic task. Uniform random "
        "digits leave a from-scratch model at chance on every digit (it never starts copying); the arithmetic "
        "examples' skewed digits break that symmetry (0.3 measured).",
    )
    arch: Literal["llama", "gpt2"] = Field(
        "llama",
        description="llama (RoPE) or gpt2 (learned absolute positions; LoRA target_modules c_attn, c_proj, c_fc).",
    )
    pack_width: int = Field(
        0,
        ge=0,
        description="Pack a step's rows into sequences of this many tokens (a block-diagonal causal mask, "
        "positions restarting per row: the same loss as padding them) instead of padding each row to the "
        "longest; 0 = pad. Digit sums: 45% of a padded batch was padding, and 128 made a step ~1.7x faster.",
    )
    check_every: int = Field(50, ge=1, description="digit_sums: steps between held-out band checks.")
    min_steps: int = Field(300, ge=0, description="digit_sums: no band check before this step.")
    judge_warmup: JudgeWarmupConfig | None = Field(
        None, description="digit_sums: train the judge on own graded samples after the band (None = no)."
    )
    band: BandConfig | None = Field(
        None, description="digit_sums: stop when the held-out check lands here; error if it never does."
    )


class ModelConfig(Section):
    path: str = Field(
        "artifacts/models/tiny-arith",
        description="Local model folder, a hub id (e.g. meta-llama/...), or a local .gguf file: converted once "
        "(dequantized to an HF folder) into artifacts/models/gguf-<sha256 prefix>/, which the run then uses.",
    )
    bootstrap: BootstrapConfig | None = Field(
        None, description="If set and `path` is missing, build the tiny character-level model there first."
    )
    fetch: str | None = Field(
        None,
        description="A known model (selftrain model list), or a local .gguf file, to fetch and convert into "
        "`path` when `path` is missing.",
    )
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field("float32", description="Weights dtype.")
    trust_remote_code: bool = Field(False, description="Allow model repos to run their own code.")


class SourceConfig(Section):
    """One dataset source; `name` picks a loader from the dataset registry."""

    name: str = Field(
        description="Registered source: synthetic_arithmetic, digit_sums (digit_sums_hard, digit_sums_easy), "
        "arithmetic_words (one-step arithmetic in words, split by fact), gsm8k, math (full MATH), math500, "
        "arc_challenge, gpqa, file."
    )
    split: str = Field("train", description="Dataset split.")
    label: str | None = Field(
        None,
        description="What this source's rows are called (their `source` column, so the per-source accuracy "
        "in evaluation); default `name`. Two entries of one source, e.g. arithmetic_words add1 and add2, need "
        "distinct labels to be reported apart.",
    )
    path: str | None = Field(None, description="Local jsonl/parquet file instead of the hub.")
    subset: str | None = Field(
        None,
        description="Hub config name (e.g. gsm8k 'main', gpqa 'gpqa_diamond'); arithmetic_words: the task, "
        "add1 (a+b, 1..9), mul1 (a*b, 1..9), add2 (a+b, 10..99), mul2 (two-digit * 2..9), word1 (one-step word "
        "problems), or a comma-separated mix such as 'add1,mul1'.",
    )
    limit: int | None = Field(
        None, ge=1, description="Keep at most this many rows (after the seeded shuffle)."
    )
    level: int | None = Field(None, description="MATH level filter (e.g. 5).")
    task: str | None = Field(None, description="Grading task for `file` sources (gsm8k, math, choice, ...).")
    question_field: str | None = Field(None, description="Column holding the question (file sources).")
    reference_field: str | None = Field(
        None, description="Column holding the reference answer (file sources)."
    )
    size: int = Field(
        2000,
        ge=1,
        description="Rows generated by the synthetic sources; arithmetic_words: questions drawn per add2, mul2 "
        "or word1 task (add1 and mul1 give all of theirs).",
    )


class DataConfig(Section):
    train: list[SourceConfig] = Field(
        default_factory=lambda: [SourceConfig(name="synthetic_arithmetic", split="train")],
        description="Sources of training questions (their labels are never used to build pairs).",
    )
    eval: list[SourceConfig] = Field(
        default_factory=lambda: [SourceConfig(name="synthetic_arithmetic", split="test", limit=100)],
        description="Held-out evaluation sources.",
    )
    questions_per_iteration: int = Field(64, ge=1, description="Questions drawn for each iteration.")
    mix: Literal["proportional", "uniform"] = Field(
        "proportional",
        description="How an iteration's questions are drawn from the training sources: proportional = one "
        "seeded shuffle of all sources pooled (each source in proportion to its size); uniform = each question "
        "from a source picked uniformly at random (the CORE-PO original picks a task uniformly per step).",
    )
    shard_size: int = Field(16, ge=1, description="Questions per Parquet shard (the unit of resume).")


class PromptConfig(Section):
    template: Literal["core_po_llama3", "core_po", "chat", "plain"] = Field(
        "core_po",
        description="core_po_llama3: the official CORE-PO strings byte for byte (hand-written Llama-3 header); "
        "core_po: the same texts inside the model's own chat template; chat: the bare question as the user "
        "turn of the chat template, no response format (self-consistency: the grader reads free text); plain: "
        "compact Q/A text (tiny model).",
    )
    system: str = Field("Be a helpful assistant.", description="System turn for chat templates.")
    one_shot: bool = Field(
        False,
        description="core_po templates: one worked exchange in the CORE-PO response format (a fixed word "
        "problem, selftrain.prompts.DEMO_QUESTION) as a user/assistant turn pair before every question. Not in "
        "the paper (zero-shot); small chat models need it: SmolLM2-135M-Instruct followed the format in 0 of 192 "
        "samples without it, 175 of 192 with it. Judge prompts are unchanged.",
    )


class SamplingConfig(Section):
    n: int = Field(5, ge=2, description="Completions per question (at least 2 to form a pair).")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature.")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling threshold.")
    max_tokens: int = Field(512, ge=1, description="Maximum new tokens per completion.")
    batch_size: int = Field(16, ge=1, description="Prompts per generate call (hf engine).")


class JudgeConfig(Section):
    name: str = Field(
        "core_po",
        description="Registered judge: core_po, self_consistency, llm_as_judge (Self-Rewarding's rubric); for "
        "studies oracle (uses labels) and random.",
    )
    max_context_reasonings: int = Field(4, ge=0, description="Other reasonings shown in the reasoning judge.")
    batch_size: int = Field(16, ge=1, description="Judge prompts per forward pass (hf engine).")
    options: tuple[str, str] = Field(("A", "B"), description="Next tokens read as True / False.")
    min_parse_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="The score stage fails (one line, naming this field) when fewer than this share can be "
        "read, instead of scoring them all 0 or none and training nothing: core_po, of an iteration's samples "
        "in the response format (checked before the judge runs); llm_as_judge, of its judgments with a "
        "parsable `Score: N` (checked after they are written). 0 = never fail, only warn (under 50 %). The "
        "SmolLM2 recipe sets 0.05; the tiny test models, which often cannot write the format, need 0.",
    )
    votes: Literal["all", "finished"] = Field(
        "all",
        description="Which samples vote in a question's consistency (self_consistency's score, every judge's "
        "`consistency` column): all (SC-PO as published: every sample with an extracted answer, truncated ones "
        "included) or finished (only samples that ended on their own; the share is of those). A truncated "
        "sample's answer is whatever number it had reached when cut off: on SmolLM2, half the samples run into "
        "max_tokens and their stray numbers split the vote.",
    )
    min_votes: int = Field(
        1,
        ge=1,
        description="An answer with fewer votes than this scores consistency 0: with votes: finished, a "
        "question with one finished sample would otherwise score it 1.0.",
    )
    # llm_as_judge (Self-Rewarding, arXiv 2401.10020): the model writes judgments with the paper's rubric
    rubric: Literal["paper", "compact"] = Field(
        "paper",
        description="llm_as_judge: the paper's additive 5-point rubric verbatim, or `compact` (same `Score: N` "
        "contract in a few lines, for models with a short context such as the tiny model; selftrain.rubric).",
    )
    samples: int = Field(
        3, ge=1, description="llm_as_judge: judgments per sample, their parsed scores averaged."
    )
    temperature: float = Field(0.7, ge=0, description="llm_as_judge: sampling temperature of the judgments.")
    top_p: float = Field(0.9, gt=0, le=1, description="llm_as_judge: nucleus top-p of the judgments.")
    max_tokens: int = Field(
        256, ge=1, description="llm_as_judge: tokens per judgment (the rubric asks for <= 100 words + score)."
    )


class PairsConfig(Section):
    builder: str = Field(
        "best_vs_rest",
        description="Registered pair builder: best_vs_rest, majority_vs_minority, or chosen_only (no rejected "
        "side: for training.loss sft).",
    )
    min_margin: float = Field(0.0, ge=0, description="Drop pairs whose chosen-rejected score gap is smaller.")
    min_chosen_score: float = Field(
        0.0, ge=0, description="Drop rows whose chosen sample scores lower (SC: the top answer's share)."
    )
    max_per_question: int = Field(
        0, ge=0, description="Keep at most this many rows (pairs, or chosen samples) per question; 0 = all."
    )
