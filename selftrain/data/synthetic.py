"""The synthetic arithmetic task of the tiny CPU recipe: `a+b*c`-style questions with worked solutions.

Test questions come from a fixed tenth of the expression space that training data never touches.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

OPS = ["+", "-", "*"]


@dataclass(frozen=True)
class Problem:
    a: int
    op1: str
    b: int
    op2: str
    c: int

    @property
    def expression(self) -> str:
        return f"{self.a}{self.op1}{self.b}{self.op2}{self.c}"

    @property
    def question(self) -> str:
        return f"{self.expression}=?"

    def steps(self) -> tuple[list[str], int]:
        """Worked solution steps, multiplication first, then left to right."""
        a, b, c = self.a, self.b, self.c
        if self.op2 == "*" and self.op1 != "*":
            bc = b * c
            first = f"{b}*{c}={bc}"
            result = a + bc if self.op1 == "+" else a - bc
            return [first, f"{a}{self.op1}{bc}={result}"], result
        ab = _apply(a, self.op1, b)
        result = _apply(ab, self.op2, c)
        return [f"{a}{self.op1}{b}={ab}", f"{ab}{self.op2}{c}={result}"], result

    def solution(self) -> str:
        steps, result = self.steps()
        return " ".join(steps) + f" #### {result}"

    def answer(self) -> int:
        return self.steps()[1]


def _apply(x: int, op: str, y: int) -> int:
    return x + y if op == "+" else x - y if op == "-" else x * y


def random_problem(rng: random.Random) -> Problem:
    # The first operator is never '*': a*b with a up to 20 makes 3-digit intermediates that a 1M-parameter
    # model learns far more slowly; the six remaining shapes keep the task varied enough to be non-trivial.
    return Problem(
        rng.randint(1, 20), rng.choice(["+", "-"]), rng.randint(1, 9), rng.choice(OPS), rng.randint(1, 9)
    )


def corrupt_solution(problem: Problem, rng: random.Random) -> str:
    """A plausible but wrong worked solution (one step off), for judge pre-training data."""
    steps, result = problem.steps()
    wrong = result + rng.choice([-3, -2, -1, 1, 2, 3, 10])
    if rng.random() < 0.5:
        # the last step's result is wrong
        lhs = steps[-1].split("=")[0]
        steps = steps[:-1] + [f"{lhs}={wrong}"]
    else:
        # the first step is wrong and carried through
        lhs, val = steps[0].split("=")
        steps = [f"{lhs}={int(val) + 1}", steps[1].split("=")[0] + f"={wrong}"]
    return " ".join(steps) + f" #### {wrong}"


def is_held_out(problem: Problem) -> bool:
    """A fixed tenth of the expression space is test-only; pre-training and train questions never see it."""
    return zlib.crc32(problem.expression.encode()) % 10 == 0


def problems(split: str, size: int, seed: int = 0) -> list[Problem]:
    """Deterministic problems for a split; `test` comes from the held-out tenth, everything else not."""
    rng = random.Random(f"arith-{split}-{seed}")
    want_held_out = split == "test"
    out: list[Problem] = []
    while len(out) < size:
        p = random_problem(rng)
        if is_held_out(p) == want_held_out:
            out.append(p)
    return out


# -- digit sums mod 10: the toy where self-training has room ----------------------------------------------
# Operands 0-9; the worked solution adds them in a random order, one named operand per step, keeping only the
# last digit (`4+6=0 0+3=3 ... #### 2`). Each step is one of 100 facts (learned in minutes); errors come from
# long chains (skipping or repeating an operand), so a model pre-trained on short chains gets long ones right
# sometimes but not reliably: the headroom self-training can sharpen (measured in /work/shared/TOY-STUDIES.md).

EASY_OPERANDS = (4, 5)
HARD_OPERANDS = (6, 8)


@dataclass(frozen=True)
class DigitSum:
    operands: tuple[int, ...]

    @property
    def question(self) -> str:
        return "+".join(str(d) for d in self.operands) + "=?"

    def answer(self) -> int:
        return sum(self.operands) % 10

    def solution(self, rng: random.Random | None = None) -> str:
        """A worked solution adding the operands in a random order (`rng`) or left to right (None)."""
        order = list(self.operands)
        if rng is not None:
            rng.shuffle(order)
        acc = order[0]
        steps = []
        for d in order[1:]:
            new = (acc + d) % 10
            steps.append(f"{acc}+{d}={new}")
            acc = new
        return " ".join(steps) + f" #### {acc}"


def random_digit_sum(rng: random.Random, lo: int, hi: int) -> DigitSum:
    return DigitSum(tuple(rng.randint(0, 9) for _ in range(rng.randint(lo, hi))))


def digit_sum_held_out(p: DigitSum) -> bool:
    """A fixed fifth of the question space is evaluation-only; pre-training and train questions never see it."""
    return zlib.crc32(p.question.encode()) % 5 == 0


def corrupt_digit_sum(p: DigitSum, rng: random.Random) -> str:
    """A plausible wrong worked solution: one step's digit off (carried through), or an operand skipped."""
    order = list(p.operands)
    rng.shuffle(order)
    if len(order) > 2 and rng.random() < 0.5:
        order.pop(rng.randrange(1, len(order)))  # skip an operand: every step right, the answer wrong
        if sum(order) % 10 == p.answer():
            order = order + [rng.randint(1, 9)]
        return DigitSum(tuple(order)).solution()
    acc, steps = order[0], []
    bad = rng.randrange(1, len(order))
    for i, d in enumerate(order[1:], 1):
        new = (acc + d) % 10
        if i == bad:
            new = (new + rng.randint(1, 9)) % 10
        steps.append(f"{acc}+{d}={new}")
        acc = new
    return " ".join(steps) + f" #### {acc}"


def digit_sums(split: str, size: int, seed: int = 0) -> list[DigitSum]:
    """Deterministic questions. `hard` (6-8 operands), `easy` (4-5) and the bootstrap's `check-hard` /
    `check-easy` come from the held-out fifth; `train` (unlabeled self-training questions, 4-8 operands) and
    pre-training never touch it."""
    if split.endswith("hard"):
        lo, hi = HARD_OPERANDS
    elif split.endswith("easy"):
        lo, hi = EASY_OPERANDS
    else:
        lo, hi = EASY_OPERANDS[0], HARD_OPERANDS[1]
    rng = random.Random(f"digits-{split}-{seed}")
    want_held_out = split != "train"
    out: list[DigitSum] = []
    seen: set[str] = set()
    while len(out) < size:
        p = random_digit_sum(rng, lo, hi)
        if digit_sum_held_out(p) == want_held_out and (p.question not in seen or len(seen) > 50 * size):
            seen.add(p.question)
            out.append(p)
    return out
