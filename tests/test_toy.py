"""The digit-sums toy, SFT/RPO training, the pair filters and the study judges (fast: tiny models only)."""

from __future__ import annotations

import random

import pytest

from selftrain.config import BandConfig, BootstrapConfig, ConfigError
from selftrain.data import synthetic
from selftrain.data.sources import load_source
from selftrain.recipes import load_config

from .conftest import ROOT, small_bootstrap


def test_digit_batch_mixes_arithmetic_rows_at_the_configured_share():
    from selftrain.prompts import PromptBuilder
    from selftrain.tiny import build_tokenizer, digit_batch

    builder = PromptBuilder(build_tokenizer(), template="plain")
    rng = random.Random(0)

    def arithmetic_share(**kw) -> float:
        cfg = BootstrapConfig(task="digit_sums", judge_fraction=0.0, batch_size=64, **kw)
        rows = [r for _ in range(20) for r in digit_batch(builder, rng, cfg)]
        # arithmetic questions have '*' or '-' or a two-digit operand; digit sums are single digits joined by '+'
        return sum(
            not all(t.isdigit() and len(t) == 1 for t in q[q.index("Q: ") + 3 : q.index("=?")].split("+"))
            for q, _ in rows
        ) / len(rows)

    assert arithmetic_share() == 0.0
    assert 0.2 < arithmetic_share(arithmetic_fraction=0.3) < 0.4
    judge = digit_batch(builder, rng, BootstrapConfig(task="digit_sums", judge_fraction=1.0))
    assert all(target in ("A", "B") for _, target in judge)


def test_packed_batch_gives_the_padded_batch_loss_and_gradients():
    """Packing is a speed-up only: the same rows, the same mean loss over target tokens, the same gradients."""
    import torch

    from selftrain.packing import encode_batch, pack_batch
    from selftrain.prompts import PromptBuilder
    from selftrain.tiny import build_model, build_tokenizer, digit_batch

    tokenizer = build_tokenizer()
    builder = PromptBuilder(tokenizer, template="plain")
    cfg = BootstrapConfig(task="digit_sums", judge_fraction=0.0, arithmetic_fraction=0.3, hidden_size=32)
    torch.manual_seed(0)
    model = build_model(tokenizer, cfg)
    batch = digit_batch(builder, random.Random(0), cfg)
    ids, labels, mask = encode_batch(tokenizer, batch)
    packed = pack_batch(tokenizer, batch, 128)
    assert packed["input_ids"].shape[0] < len(batch) // 2  # 64 rows of ~40 tokens fit in far fewer sequences
    assert (packed["labels"] != -100).sum() == (labels != -100).sum()

    def loss_and_grads(**kwargs) -> tuple[float, list]:
        model.zero_grad()
        loss = model(**kwargs).loss
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters()]

    padded_loss, padded_grads = loss_and_grads(input_ids=ids, attention_mask=mask, labels=labels)
    packed_loss, packed_grads = loss_and_grads(**packed)
    assert packed_loss == pytest.approx(padded_loss, rel=1e-5)
    for a, b in zip(padded_grads, packed_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)


def test_digit_sum_solutions_add_every_operand_once_in_any_order():
    rng = random.Random(0)
    for _ in range(200):
        p = synthetic.random_digit_sum(rng, 2, 8)
        text = p.solution(rng)
        steps, answer = text.rsplit(" #### ", 1)
        assert int(answer) == p.answer() == sum(p.operands) % 10
        parts = steps.split()
        assert len(parts) == len(p.operands) - 1
        used = [int(parts[0].split("+")[0])] + [int(s.split("+")[1].split("=")[0]) for s in parts]
        assert sorted(used) == sorted(p.operands)
        wrong = synthetic.corrupt_digit_sum(p, rng)
        assert wrong.rsplit(" #### ", 1)[1] != str(p.answer())


def test_digit_sum_sources_hard_easy_held_out_and_unlabeled_train_apart():
    from selftrain.config import SourceConfig

    train = load_source(SourceConfig(name="digit_sums", split="train", size=3000), 0)
    hard = load_source(SourceConfig(name="digit_sums_hard", limit=200), 0)
    easy = load_source(SourceConfig(name="digit_sums_easy", limit=100), 0)
    assert {r["source"] for r in hard} == {"digit_sums_hard"}
    assert all(6 <= len(r["question"].split("+")) <= 8 for r in hard)
    assert all(4 <= len(r["question"].split("+")) <= 5 for r in easy)
    assert not {r["question"] for r in train} & {r["question"] for r in hard + easy}
    assert all(synthetic.digit_sum_held_out(synthetic.DigitSum(_ops(r))) for r in hard + easy)
    q = hard[0]
    assert q["reference"] == str(sum(_ops(q)) % 10) and q["task"] == "arithmetic"


def _ops(row: dict) -> tuple[int, ...]:
    return tuple(int(x) for x in row["question"].removesuffix("=?").split("+"))


def test_shipped_recipe_is_the_digit_sums_toy_with_sc_and_sft():
    cfg = load_config(ROOT / "configs" / "tiny-digits.yaml")
    assert cfg.model.bootstrap.task == "digit_sums" and cfg.model.bootstrap.band is not None
    assert (cfg.judge.name, cfg.pairs.builder, cfg.training.loss) == (
        "self_consistency",
        "chosen_only",
        "sft",
    )
    assert [s.name for s in cfg.data.eval] == ["digit_sums_hard", "digit_sums_easy"]


def test_chosen_only_needs_sft():
    with pytest.raises(ConfigError, match="chosen_only has no rejected side"):
        load_config(ROOT / "configs" / "tiny-digits.yaml", ["training.loss=dpo"])


def test_chosen_only_and_filters():
    from selftrain.pairs import PAIR_BUILDERS, apply_filters

    group = [
        {"question_id": "q", "prompt": "p", "completion": f"c{i}", "sample_index": i, "score": s, "answer": a}
        for i, (s, a) in enumerate([(0.5, "1"), (0.25, "2"), (0.5, "1"), (0.0, None), (0.25, "2")])
    ]
    rows = PAIR_BUILDERS.get("chosen_only")(group, 0.0)
    assert [r["chosen"] for r in rows] == ["c0", "c2", "c1", "c4"] and rows[0]["rejected"] is None
    assert [r["chosen"] for r in apply_filters(rows, 0.5, 0)] == ["c0", "c2"]
    assert [r["chosen"] for r in apply_filters(rows, 0.0, 3)] == ["c0", "c2", "c1"]
    pairs = PAIR_BUILDERS.get("majority_vs_minority")(group, 0.0)
    assert pairs and apply_filters(pairs, 0.6, 0) == []  # chosen score 0.5 < 0.6


def test_oracle_and_random_judges_need_no_model():
    from selftrain.judges import JUDGES, Judging

    questions = [{"question_id": "q", "task": "arithmetic", "reference": "3", "choices": None}]
    samples = {
        "q": [
            {"sample_index": i, "completion": f"1+2=3 #### {a}", "answer": a, "finish_reason": "stop"}
            for i, a in enumerate(["3", "4", "3"])
        ]
    }
    assert not any(JUDGES.get(n).needs_model for n in ("oracle", "random", "self_consistency"))
    assert JUDGES.get("oracle").reads_labels and not JUDGES.get("random").reads_labels
    oracle = JUDGES.get("oracle")(Judging(None, questions, samples))
    assert [r["score"] for r in oracle] == [1.0, 0.0, 1.0]
    r1 = [r["score"] for r in JUDGES.get("random")(Judging(None, questions, samples))]
    assert r1 == [r["score"] for r in JUDGES.get("random")(Judging(None, questions, samples))]
    assert len(set(r1)) == 3


def test_within_question_auroc_ignores_which_questions_are_hard():
    from selftrain.diagnostics import auroc, within_question_auroc

    # question a: hard (low scores), b: easy (high); within each the judge ranks at random
    groups = [
        ([0.1, 0.2, 0.1, 0.2], [True, False, False, True]),
        ([0.9, 0.8, 0.9, 0.8], [True, False, False, True]),
    ]
    scores = [s for g in groups for s in g[0]]
    labels = [y for g in groups for y in g[1]]
    assert within_question_auroc(groups) == 0.5
    assert auroc(scores, labels) == 0.5
    assert within_question_auroc([([0.9, 0.1], [True, False]), ([0.5], [True])]) == 1.0


def test_rpo_is_dpo_plus_weighted_nll():
    from selftrain.training.dpo import dpo_loss_args

    cfg = load_config(None, ["training.loss=rpo", "training.rpo_alpha=0.5"])
    assert dpo_loss_args(cfg.training) == {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]}
    assert dpo_loss_args(load_config().training) == {"loss_type": ["sigmoid"]}


def test_digit_sums_bootstrap_errors_when_it_cannot_reach_the_band(tmp_path):
    from selftrain.tiny import BootstrapError, build_tiny_model

    band = BandConfig(hard_questions=4, easy_questions=4, pass_questions=2, k=2)
    cfg = small_bootstrap(
        task="digit_sums",
        steps=4,
        batch_size=8,
        hidden_size=32,
        num_layers=1,
        min_steps=2,
        check_every=2,
        band=band,
    )
    with pytest.raises(BootstrapError, match="did not reach the band within 4 steps"):
        build_tiny_model(tmp_path / "m", cfg)
    assert not (tmp_path / "m").exists()


def test_sft_training_changes_the_adapter(tmp_path, tiny_model):
    """loss sft on chosen-only rows trains the LoRA adapter (B matrices leave zero) and saves a PEFT adapter
    that the engines load unchanged."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from safetensors.torch import load_file

    from selftrain.schemas import PAIRS
    from selftrain.training.sft import train_policy

    rows = [
        {
            "question_id": f"q{i}",
            "prompt": f"<bos>Q: {i}+1=?\nA:",
            "chosen": f" {i}+1={i + 1} #### {i + 1}",
            "rejected": None,
            "chosen_score": 1.0,
            "rejected_score": None,
        }
        for i in range(8)
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=PAIRS), tmp_path / "pairs.parquet")
    cfg = load_config(
        None,
        [
            f"model.path={tiny_model}",
            "training.loss=sft",
            "training.lora.r=4",
            "training.lora.alpha=8",
            "training.learning_rate=1e-2",
            "training.max_steps=3",
            "training.per_device_batch_size=4",
            "training.max_length=64",
        ],
    )
    out = tmp_path / "adapter"
    out.mkdir()
    stats = train_policy(cfg, pq.read_table(tmp_path / "pairs.parquet"), out, None)
    assert stats["steps"] == 3 and stats["sft_examples"] == 8 and stats["loss_kind"] == "sft"
    tensors = load_file(str(out / "adapter_model.safetensors"))
    b = [v for k, v in tensors.items() if "lora_B" in k]
    assert b and any(float(v.abs().max()) > 0 for v in b)  # LoRA B starts at zero: training moved it
    from selftrain.engines.hf import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(cfg, str(out))
    assert model is not None


def test_cached_model_from_before_the_new_bootstrap_fields_is_still_accepted(tmp_path):
    """A bootstrap.json written before task/arch/band existed counts as built with their defaults."""
    import json

    from selftrain.tiny import _check_built_with

    old = BootstrapConfig(steps=800).model_dump()
    for key in ("task", "arch", "long_fraction", "threads", "check_every", "min_steps", "band"):
        old.pop(key)
    (tmp_path / "bootstrap.json").write_text(json.dumps({**old, "parameters": 1}))
    _check_built_with(tmp_path, BootstrapConfig(steps=800))
    with pytest.raises(ConfigError, match="task digit_sums vs arithmetic"):
        _check_built_with(tmp_path, BootstrapConfig(steps=800, task="digit_sums"))


def test_study_reads_a_finished_run(tmp_path):
    """bench/toy_study.py's cell summary reads the run's tables (it broke once when accuracy_table grew columns)."""
    import sys

    from selftrain.store import RunStore

    from .test_report import _fake_run

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import toy_study
    finally:
        sys.path.remove(str(ROOT / "bench"))
    result = toy_study.cell_result(RunStore(_fake_run(tmp_path)))
    first = result["iterations"][0]
    assert first["iteration"] == 0 and first["rows"] == 4 and first["chosen_correct"] == 1.0


def test_judge_warmup_trains_on_own_graded_samples_in_the_core_po_formats():
    """Judge rows are the core_po judge's plain prompts with the context drawn from the question's own
    reasonings; training them changes the model; the AUROC probe scores CORE-PO and self-consistency on the
    same samples; a model whose samples never parse is refused with the field named."""
    import torch

    from selftrain.config import JudgeWarmupConfig
    from selftrain.judge_warmup import judge_aurocs, judge_prompts, train_judge, warm_up_judge
    from selftrain.prompts import PromptBuilder
    from selftrain.tiny import _digit_solve_example, build_model, build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    builder = PromptBuilder(tokenizer, template="plain")
    model = build_model(tokenizer, BootstrapConfig(hidden_size=32, num_layers=1, num_heads=2))
    p = synthetic.DigitSum((1, 2, 3))
    group = (p, [("1+2=3 3+3=6", "6", True), ("1+3=4 4+2=6", "6", True), ("1+2=3 3+3=7", "7", False)])
    reasoning, answer = judge_prompts(builder, group, 2, 2, random.Random(0))
    assert reasoning.startswith("<bos>Q: 1+2+3=?\nR: ") and reasoning.endswith(
        "S: 1+2=3 3+3=7\nOK? A) True B) False\nJ: "
    )
    assert reasoning.count("R: ") == 2
    assert answer == builder.answer_judge(p.question, "1+2=3 3+3=7", "7")

    probe = judge_aurocs(model, tokenizer, builder, [group, group], context=2)
    assert probe["self_consistency"] == 1.0  # the wrong answer is the minority one in both questions
    assert probe["sample_accuracy"] == round(2 / 3, 4) and 0.0 <= probe["core_po"] <= 1.0

    cfg = JudgeWarmupConfig(steps=2, batch_size=8, max_context_reasonings=2)
    before = [t.detach().clone() for t in model.parameters()]
    train_judge(
        model,
        tokenizer,
        builder,
        cfg,
        [group],
        lambda r: _digit_solve_example(builder, r, 0.1),
        random.Random(0),
    )
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))

    # an untrained model writes no "#### N": nothing to grade
    with pytest.raises(ConfigError, match="judge_warmup"):
        warm_up_judge(
            model, tokenizer, builder, JudgeWarmupConfig(questions=3, samples=2), lambda r: None, seed=0
        )


def test_judge_specs_say_what_the_stages_read():
    """What the score stage, the fingerprints and the report know of a judge comes from its JudgeSpec."""
    from selftrain.judges import JUDGES
    from selftrain.spec import LLM_JUDGE_ONLY

    core, llm = JUDGES.get("core_po"), JUDGES.get("llm_as_judge")
    assert core.needs_model and core.reads_format and not llm.reads_format
    assert llm.max_score == 5.0 and "judgments" in llm.writes and "answer_confidence" in core.writes
    # the fingerprint keys only llm_as_judge reads are the ones its spec declares and core_po does not
    only_llm = tuple(k for k in llm.config_keys if k not in core.config_keys)
    assert tuple(key.removeprefix("judge.") for key, _ in LLM_JUDGE_ONLY) == only_llm
    assert "min_parse_rate" in core.config_keys and "min_parse_rate" in llm.config_keys
    for name in JUDGES.names():
        assert JUDGES.get(name).name == name
