"""Prompt templates: the CORE-PO answer format, its two P(True) judge prompts, and a compact `plain` variant
for the tiny character-level model. Parsing of completions back into (reasoning, answer) lives here too, so
the format and its parser cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from selftrain.grading.normalize import ROMAN

UNDERSTANDING = "**Understanding the question:**"
REASONING = "**Reasoning:**"
FINAL = "**Final answer:**"

_CORE_PO_FORMAT = (
    "Answer the question in the following format:\n"
    f"{UNDERSTANDING} <your understanding of the question>\n"
    f"{REASONING} <step-by-step reasoning>\n"
    f'{FINAL} "The answer is $<value>$"\n'
    "STRICTLY FOLLOW THE RESPONSE FORMAT."
)
_CORE_PO_CHOICE_FORMAT = (
    "Answer the question in the following format:\n"
    f"{UNDERSTANDING} <your understanding of the question>\n"
    f"{REASONING} <step-by-step reasoning>\n"
    f'{FINAL} "The answer is <one of {{labels}}> which is <the option\'s text>"\n'
    "DO NOT RETURN TWO OR MORE ANSWERS. STRICTLY FOLLOW THE RESPONSE FORMAT."
)


@dataclass(frozen=True)
class Parsed:
    reasoning: str | None
    answer: str | None

    @property
    def ok(self) -> bool:
        return bool(self.reasoning and self.reasoning.strip()) and bool(self.answer and self.answer.strip())


def render_options(choices: list[str]) -> str:
    return "\n".join(f"[{ROMAN[i]}]: {c}" for i, c in enumerate(choices))


class PromptBuilder:
    """Renders question and judge prompts for one tokenizer and template."""

    def __init__(self, tokenizer: Any, template: str = "core_po", system: str = "Be a helpful assistant."):
        self.tokenizer = tokenizer
        self.template = template
        self.system = system
        self.has_chat = bool(getattr(tokenizer, "chat_template", None))

    # -- rendering ---------------------------------------------------------------------------------------
    def _chat(self, user: str, prefill: str = "") -> str:
        if self.has_chat:
            messages = [{"role": "system", "content": self.system}, {"role": "user", "content": user}]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return text + prefill
        bos = getattr(self.tokenizer, "bos_token", None) or ""
        return f"{bos}{self.system}\n\nUser: {user}\n\nAssistant: {prefill}"

    def _plain(self, body: str) -> str:
        bos = getattr(self.tokenizer, "bos_token", None) or ""
        return f"{bos}{body}"

    def question(self, question: str, choices: list[str] | None = None) -> str:
        if self.template == "plain":
            opts = f"\n{render_options(choices)}" if choices else ""
            return self._plain(f"Q: {question}{opts}\nA:")
        if choices:
            labels = "/".join(f"[{ROMAN[i]}]" for i in range(len(choices)))
            user = f"{question}\n{render_options(choices)}\n\n{_CORE_PO_CHOICE_FORMAT.format(labels=labels)}"
        else:
            user = f"{question}\n\n{_CORE_PO_FORMAT}"
        return self._chat(user)

    def reasoning_judge(self, question: str, selected: str, others: list[str]) -> str:
        if self.template == "plain":
            ctx = "".join(f"R: {r}\n" for r in others)
            return self._plain(f"Q: {question}\n{ctx}S: {selected}\nOK? A) True B) False\nJ: ")
        parts = ["Answer whether the **selected reasoning** is correct for the given **question**.", ""]
        parts.append(f"**Question:** {question}")
        for k, r in enumerate(others, 1):
            parts.append(
                f"**Randomly generated reasoning {k} (this may be either correct or incorrect):** {r}"
            )
        parts += [f"**Selected reasoning:** {selected}", "", "Is the **selected reasoning** correct?"]
        parts += ["A) True", "B) False"]
        return self._chat("\n".join(parts), prefill="The **selected reasoning** is: ")

    def answer_judge(self, question: str, reasoning: str, answer: str) -> str:
        if self.template == "plain":
            return self._plain(f"Q: {question}\nR: {reasoning}\nS: {answer}\nOK? A) True B) False\nJ: ")
        user = "\n".join(
            [
                "Answer whether the **selected answer** is correct for the given **question**.",
                "",
                f"**Question:** {question}",
                f"**Reasoning:** {reasoning}",
                f"**Selected answer:** {answer}",
                "",
                "Is the **selected answer** correct?",
                "A) True",
                "B) False",
            ]
        )
        return self._chat(user, prefill="The **selected answer** is: ")

    # -- parsing -----------------------------------------------------------------------------------------
    def parse(self, completion: str) -> Parsed:
        """Split a completion into (reasoning, answer); either is None when the format was not followed."""
        if self.template == "plain":
            if "####" not in completion:
                return Parsed(None, None)
            reasoning, answer = completion.rsplit("####", 1)
            return Parsed(reasoning.strip() or None, answer.strip() or None)
        if UNDERSTANDING not in completion or FINAL not in completion:
            return Parsed(None, None)
        body = completion.split(UNDERSTANDING, 1)[1]
        reasoning, answer = body.rsplit(FINAL, 1)
        reasoning = reasoning.replace(REASONING, "").strip()
        return Parsed(reasoning or None, answer.strip() or None)
