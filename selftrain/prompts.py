"""Prompt templates: the CORE-PO answer format, its two P(True) judge prompts, and a compact `plain` variant
for the tiny character-level model. Parsing of completions back into (reasoning, answer) lives here too, so
the format and its parser cannot drift apart.

Templates (`prompt.template`):
- `core_po_llama3`: the official CORE-PO strings byte for byte (hsjang0/CORE-PO, core_po/generation.py and
  core_po/judge.py), a Llama-3 chat string written out by hand, quirks included: no "Cutting Knowledge Date"
  lines, a newline after every `<|eot_id|>`, a line of four spaces in the reasoning judge's system turn, no
  period after the answer judge's system text. For Llama-3 models; the paper recipe uses it.
- `core_po`: the same system and user texts inside the model's own chat template (other model families).
- `chat`: the bare question as the user turn of the model's chat template (no response format): for
  self-consistency, whose answers the grader reads from free text. Judge prompts as `core_po`.
- `plain`: compact `Q:`/`A:` text that the tiny CPU model is pre-trained on.

BOS rule (one BOS everywhere): rendered text never carries a BOS that the tokenizer adds by itself. Engines
and TRL both encode with `add_special_tokens=True` (see `encode_prompt`), so the ids the policy sampled from
are the ids DPO trains on. Only a tokenizer that adds no BOS on its own gets its BOS written into the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from selftrain.grading.normalize import ROMAN

UNDERSTANDING = "**Understanding the question:**"
REASONING = "**Reasoning:**"
FINAL = "**Final answer:**"
EOT = "<|eot_id|>"

TEMPLATES = ("core_po_llama3", "core_po", "chat", "plain")

# -- the official texts (see the module docstring for which quirks are deliberate) ---------------------------
QUESTION_SYSTEM = "Be a helpful assistant."
# STaSC (arXiv 2503.08681; ../shared/METHODS.md): the correction turn shows the question and the initial answer
STASC_CORRECTION = (
    "Consider the question and the initial answer. Generate a correction to the initial answer if it is "
    "incorrect. Disregard the information you already have, look for other options. Do not use the "
    "information that does not match your criteria.\n\nQuestion: {question}\nInitial answer: {initial}\n"
    "Corrected answer:"
)
REASONING_JUDGE_SYSTEM = "Be a helpful assistant."
ANSWER_JUDGE_SYSTEM = "Be a helpful assistant"  # sic: the original has no period here

_QUESTION_USER = (
    "Answer the following question using **reasoning** before providing a final answer. Provide precise, "
    "structured, and well-reasoned responses.\n\n**Question:** {question}\n\n### Response Format\n\n"
    f"{UNDERSTANDING} <identify key details>\n\n{REASONING} <perform chain-of-thought>\n\n"
    f"{FINAL} {{final}}\n\nEnsure correctness and clarity. Return a concise and definitive response to the "
    "question. {extra}STRICTLY FOLLOW THE RESPONSE FORMAT."
)
_NUMERIC_FINAL = '"The answer is $<value>$"'
_CHOICE_FINAL = (
    '"The answer is <choose the most promising single answer from {options}> which is <copy the content>"'
)
_CHOICE_EXTRA = "DO NOT RETURN TWO OR MORE ANSWERS. "

# prompt.one_shot (not in the paper, which is zero-shot): one worked exchange in the response format before the
# question. SmolLM2-135M-Instruct wrote the format for 0 of 192 samples from the instruction alone and for 175 of
# 192 with this turn pair in front (single-digit addition, T 0.8; README, "A real model"). A word problem, so
# that it matches none of the arithmetic_words questions.
DEMO_QUESTION = "A box holds 12 pencils. Anna takes 5 of them. How many pencils are left in the box?"
DEMO_ANSWER = (
    f"{UNDERSTANDING} The box starts with 12 pencils and Anna takes 5 away.\n\n"
    f"{REASONING} Taking 5 from 12 leaves 12 - 5 = 7.\n\n{FINAL} The answer is $7$"
)

_REASONING_JUDGE_INTRO = (
    "Answer whether the **selected reasoning** is correct for the given **question**. Additionally, we provide "
    "randomly generated reasoning before presenting the selected reasoning."
)
_CONTEXT_REASONING = "**Randomly generated reasoning {k} (this may be either correct or incorrect):** "
_REASONING_JUDGE_TAIL = (
    "\n\nIs the **selected reasoning** correct?\nA) True\nB) False\nThe **selected reasoning** is: [A / B, "
    "depending on whether the **selected reasoning** is correct given the **question**]"
)
REASONING_PREFILL = "The **selected reasoning** is: "

_ANSWER_JUDGE_INTRO = (
    "Answer whether the **selected answer** is correct for the given **question**, based on the provided "
    "**reasoning**."
)
_ANSWER_JUDGE_TAIL = (
    "\n\nIs the **selected answer** correct?\nA) True\nB) False\nThe **selected answer** is: [A / B, depending "
    "on whether the **selected answer** is correct given the **question** and the **reasoning**]"
)
ANSWER_PREFILL = "The **selected answer** is: "


@dataclass(frozen=True)
class Parsed:
    reasoning: str | None
    answer: str | None

    @property
    def ok(self) -> bool:
        return self.reasoning is not None and self.answer is not None


def render_options(choices: list[str]) -> str:
    return "\n".join(f"[{ROMAN[i]}]: {c}" for i, c in enumerate(choices))


def choice_question(question: str, choices: list[str]) -> str:
    """The original's multiple-choice question text: `{q} Choices:\\n[I]: …\\n[II]: …\\n`."""
    return f"{question} Choices:\n" + "".join(f"[{ROMAN[i]}]: {c}\n" for i, c in enumerate(choices))


def is_multiple_choice(question: str) -> bool:
    """The original's test: a question holding both `[I]` and `[III]` gets the multiple-choice template."""
    return "[I]" in question and "[III]" in question


def choice_labels(question: str) -> str:
    # sic: the original offers [IV] even for three options and [V] only when the text holds "[V]"
    return "[I] / [II] / [III] / [IV] / [V]" if "[V]" in question else "[I] / [II] / [III] / [IV]"


def question_user_text(question: str) -> str:
    if is_multiple_choice(question):
        final = _CHOICE_FINAL.format(options=choice_labels(question))
        return _QUESTION_USER.format(question=question, final=final, extra=_CHOICE_EXTRA)
    return _QUESTION_USER.format(question=question, final=_NUMERIC_FINAL, extra="")


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether encoding with special tokens puts the BOS in front by itself (Llama-3 does; the tiny char
    tokenizer and Qwen do not)."""
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos_id is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos_id


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """The one way selftrain turns a rendered prompt into ids (engines; TRL does the same for DPO)."""
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


class PromptBuilder:
    """Renders question and judge prompts for one tokenizer and template."""

    def __init__(
        self, tokenizer: Any, template: str = "core_po", system: str = QUESTION_SYSTEM, one_shot: bool = False
    ):
        if template not in TEMPLATES:
            raise ValueError(f"prompt.template: unknown {template!r}; choose one of {', '.join(TEMPLATES)}")
        self.tokenizer = tokenizer
        self.template = template
        self.system = system
        self.one_shot = one_shot and template not in ("plain", "chat")
        self.has_chat = bool(getattr(tokenizer, "chat_template", None))
        bos = getattr(tokenizer, "bos_token", None) or ""
        # text-level BOS only where the tokenizer will not add one (see the module docstring)
        self._text_bos = "" if not bos or _safe_adds_bos(tokenizer) else bos

    # -- rendering ---------------------------------------------------------------------------------------
    def _llama3(self, system: str, user: str, prefill: str = "", system_pad: str = "") -> str:
        return (
            f"<|start_header_id|>system<|end_header_id|>\n{system_pad}\n{system}{EOT}\n"
            f"<|start_header_id|>user<|end_header_id|>\n\n{user}{EOT}\n"
            f"<|start_header_id|>assistant<|end_header_id|>\n\n{prefill}"
        )

    def _chat(
        self, system: str, user: str, prefill: str = "", system_pad: str = "", demo: bool = False
    ) -> str:
        """`demo`: the one-shot exchange (prompt.one_shot) as a user/assistant turn pair before `user`."""
        if self.template == "core_po_llama3":
            shot = ""
            if demo:
                head = "<|start_header_id|>{}<|end_header_id|>\n\n"
                shot = (
                    f"{head.format('user')}{question_user_text(DEMO_QUESTION)}{EOT}\n"
                    f"{head.format('assistant')}{DEMO_ANSWER}{EOT}\n"
                )
            text = self._llama3(system, user, prefill, system_pad)
            if shot:
                cut = text.index("<|start_header_id|>user")
                text = text[:cut] + shot + text[cut:]
            return self._text_bos + text
        if self.has_chat:
            messages = [{"role": "system", "content": system}]
            if demo:
                messages += [
                    {"role": "user", "content": question_user_text(DEMO_QUESTION)},
                    {"role": "assistant", "content": DEMO_ANSWER},
                ]
            messages.append({"role": "user", "content": user})
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            bos = getattr(self.tokenizer, "bos_token", None)
            if bos and not self._text_bos and text.startswith(bos):
                text = text[len(bos) :]  # the tokenizer adds it again when encoding
            return text + prefill
        shot = f"User: {question_user_text(DEMO_QUESTION)}\n\nAssistant: {DEMO_ANSWER}\n\n" if demo else ""
        return f"{self._text_bos}{system}\n\n{shot}User: {user}\n\nAssistant: {prefill}"

    def _plain(self, body: str) -> str:
        return f"{self._text_bos}{body}"

    def question(self, question: str, choices: list[str] | None = None) -> str:
        if self.template == "plain":
            opts = f"\n{render_options(choices)}" if choices else ""
            return self._plain(f"Q: {question}{opts}\nA:")
        text = choice_question(question, choices) if choices else question
        if self.template == "chat":
            return self._chat(self.system, text)
        return self._chat(self.system, question_user_text(text), demo=self.one_shot)

    def reasoning_judge(self, question: str, selected: str, context: list[str]) -> str:
        """`context`: the randomly drawn reasonings shown before the selected one (the original draws them
        from all parsed samples of the question, the selected one included)."""
        if self.template == "plain":
            ctx = "".join(f"R: {r}\n" for r in context)
            return self._plain(f"Q: {question}\n{ctx}S: {selected}\nOK? A) True B) False\nJ: ")
        shown = "".join(_CONTEXT_REASONING.format(k=k) + r for k, r in enumerate(context, 1))
        user = (
            f"{_REASONING_JUDGE_INTRO}\n\n**Question:** {question}\n\n{shown}"
            f"\n\n**Selected reasoning:** {selected}{_REASONING_JUDGE_TAIL}"
        )
        # sic: the original's reasoning-judge header has a line of four spaces before the system text
        return self._chat(REASONING_JUDGE_SYSTEM, user, REASONING_PREFILL, system_pad="    ")

    def answer_judge(self, question: str, reasoning: str, answer: str) -> str:
        if self.template == "plain":
            return self._plain(f"Q: {question}\nR: {reasoning}\nS: {answer}\nOK? A) True B) False\nJ: ")
        user = (
            f"{_ANSWER_JUDGE_INTRO}\n\n**Question:** {question}\n\n**Reasoning:** {reasoning}"
            f"\n\n**Selected answer:** {answer}{_ANSWER_JUDGE_TAIL}"
        )
        return self._chat(ANSWER_JUDGE_SYSTEM, user, ANSWER_PREFILL)

    def user_turn(self, user: str) -> str:
        """A prompt that is one user message and no system text: the Self-Rewarding judge's rubric (its paper
        gives the rubric as the whole instruction)."""
        if self.template == "plain":
            return self._plain(user)
        if self.template == "core_po_llama3":
            head = "<|start_header_id|>{}<|end_header_id|>\n\n"
            return f"{self._text_bos}{head.format('user')}{user}{EOT}\n{head.format('assistant')}"
        if self.has_chat:
            messages = [{"role": "user", "content": user}]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            bos = getattr(self.tokenizer, "bos_token", None)
            if bos and not self._text_bos and text.startswith(bos):
                text = text[len(bos) :]  # the tokenizer adds it again when encoding
            return text
        return f"{self._text_bos}User: {user}\n\nAssistant: "

    def correction(self, question: str, choices: list[str] | None, initial: str) -> str:
        """STaSC's correction prompt: the question and an initial answer, asking for a corrected answer. The
        plain template is the tiny model's, pre-trained on single Q/A pairs only: shown an earlier attempt it
        answers garbage (measured: no correct correction), so there the correction is a second attempt at the
        question alone, without the initial answer (the chat templates carry the paper's prompt)."""
        if self.template == "plain":
            del initial
            return self.question(question, choices)
        text = choice_question(question, choices) if choices else question
        return self._chat(self.system, STASC_CORRECTION.format(question=text, initial=initial))

    # -- parsing -----------------------------------------------------------------------------------------
    def parse(self, completion: str) -> Parsed:
        """Split a completion into (reasoning, answer); either is None when the format was not followed.

        CORE-PO templates follow the original exactly: reasoning = after the FIRST "Understanding" marker up
        to the first "Final answer" marker, with "\\n**Reasoning:**" removed and nothing stripped; answer =
        after the first "Final answer" marker up to the next one (or `<|eot_id|>`)."""
        if self.template == "plain":
            if "####" not in completion:
                return Parsed(None, None)
            reasoning, answer = completion.rsplit("####", 1)
            return Parsed(reasoning.strip() or None, answer.strip() or None)
        if UNDERSTANDING not in completion or FINAL not in completion:
            return Parsed(None, None)
        reasoning = completion.split(UNDERSTANDING)[1].split(FINAL)[0].replace("\n" + REASONING, "")
        answer = completion.split(FINAL)[1].split(EOT)[0]
        return Parsed(reasoning, answer)


def _safe_adds_bos(tokenizer: Any) -> bool:
    try:
        return tokenizer_adds_bos(tokenizer)
    except TypeError:  # a stub without __call__ (unit tests of the glue)
        return False
