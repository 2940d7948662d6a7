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
