"""Headroom tasks for a small real chat model: one-step arithmetic in plain words (source `arithmetic_words`).

Tasks (`subset`, comma-separated to mix): add1 (a+b, a and b in 1..9), mul1 (a*b, 1..9), add2 (a+b, 10..99),
mul2 (a two-digit number times one of 2..9, either order), word1 (one-step word problems: gives away, buys
more, splits equally; every number below 100, every answer an exact integer). Operands start at 1, not 0:
x+0 and x*0 are identities, not facts to learn, and would inflate accuracy. Several plain phrasings per task,
none telling the model how to format its answer.

The split is by fact, not by phrasing. Every question rests on one addition or multiplication fact {x, y},
unordered, so a+b and b+a (a*b and b*a) are one fact; "gives away" a-b=c rests on b+c=a and "splits
equally" a/b=q on b*q=a. A fixed 30% of the facts of each size (both operands single-digit, one of each,
both two-digit), picked by a salted hash that does not depend on the run seed, is test-only for every task
at once: a fact held out of add1 is also kept out of word1's train split. add1 and mul1 are small, so both
splits enumerate every (ordered operands, phrasing); add2, mul2 and word1 draw `size` distinct questions per
task from their split's facts.
"""

from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import dataclass

from selftrain.registry import did_you_mean

TASKS = ("add1", "mul1", "add2", "mul2", "word1")
SPLITS = ("train", "test")
HELD_OUT = 0.3
SALT = "arithmetic_words-v1"  # changing it changes every test set

ADD = [
    "What is {a} + {b}?",
    "Compute {a} + {b}.",
    "Add {a} and {b}.",
    "What is the sum of {a} and {b}?",
    "{a} plus {b} equals what?",
    "Calculate {a} + {b}.",
    "What is {a} plus {b}?",
    "What do you get when you add {a} and {b}?",
]
MUL = [
    "What is {a} * {b}?",
    "Compute {a} × {b}.",
    "Multiply {a} by {b}.",
    "What is the product of {a} and {b}?",
    "{a} times {b} equals what?",
    "Calculate {a} * {b}.",
    "What is {a} times {b}?",
    "What do you get when you multiply {a} by {b}?",
]
WORD = {
    "-": [
        "{n} has {a} {o} and gives away {b}. How many {o} does {n} have left?",
        "{n} had {a} {o} and gave {b} of them to a friend. How many {o} does {n} have now?",
        "There are {a} {o} in a box. {n} takes {b} of them out. How many {o} are left in the box?",
    ],
    "+": [
        "{n} has {a} {o} and buys {b} more. How many {o} does {n} have now?",
        "{n} had {a} {o}. Then {n} got {b} more. How many {o} does {n} have in total?",
        "There are {a} {o} in a box. {n} puts in {b} more. How many {o} are in the box now?",
    ],
    "/": [
        "{n} has {a} {o} and splits them equally among {b} friends. How many {o} does each friend get?",
        "{n} shares {a} {o} equally between {b} bags. How many {o} go in each bag?",
        "{n} puts {a} {o} into {b} equal piles. How many {o} are in each pile?",
    ],
}
NAMES = ["Sam", "Maria", "Tom", "Aisha", "Leo", "Nina", "Ben", "Priya"]
OBJECTS = ["apples", "pencils", "marbles", "cookies", "stickers", "books", "cards", "stamps"]


@dataclass(frozen=True)
class Question:
    task: str
    index: int  # position in the task's enumeration or draw: with the task, a stable id
    op: str  # + - * /
    a: int
    b: int
    template: int
    text: str

    @property
    def answer(self) -> int:
        return apply(self.op, self.a, self.b)


def apply(op: str, a: int, b: int) -> int:
    if op == "/":
        if a % b:
            raise ValueError(f"{a}/{b} is not an exact integer")
        return a // b
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def fact(op: str, a: int, b: int) -> tuple[str, int, int]:
    """The addition or multiplication fact a question rests on, unordered: 14+29, 29+14 and 43-14 (=29) are
    ('+', 14, 29); 4*7, 7*4 and 28/4 (=7) are ('*', 4, 7)."""
    if op in ("-", "/"):
        op, a = ("+" if op == "-" else "*"), apply(op, a, b)
    return op, min(a, b), max(a, b)


def is_held_out(op: str, a: int, b: int) -> bool:
    """Whether the question's fact is test-only (a fixed set, independent of the run seed)."""
    family, x, y = fact(op, a, b)
    return (x, y) in _held_out_facts(family, len(str(x)), len(str(y)))


@functools.cache
def _held_out_facts(family: str, dx: int, dy: int) -> frozenset[tuple[int, int]]:
    """The test-only facts among those of `family` whose smaller operand has dx digits and larger dy: exactly
    the HELD_OUT share of them (rounded down) with the lowest salted hash, so each size of fact (single-digit
    ones, two-digit ones) is held out in that proportion and not merely in expectation."""
    lo, hi = (1 if dx == 1 else 10 ** (dx - 1)), 10**dy - 1
    facts = [(x, y) for x in range(lo, 10**dx) for y in range(max(x, 10 ** (dy - 1)), hi + 1)]
    facts.sort(key=lambda f: hashlib.sha256(f"{SALT}|{family}|{f[0]}|{f[1]}".encode()).digest())
    return frozenset(facts[: int(HELD_OUT * len(facts))])


def operands(task: str) -> list[tuple[str, int, int]]:
    """Every (op, a, b) of a task, both orders of a commutative pair (each order is its own question)."""
    if task in ("add1", "mul1"):
        op = "+" if task == "add1" else "*"
        return [(op, a, b) for a in range(1, 10) for b in range(1, 10)]
    if task == "add2":
        return [("+", a, b) for a in range(10, 100) for b in range(10, 100)]
    if task == "mul2":
        return [("*", *ab) for a in range(10, 100) for b in range(2, 10) for ab in ((a, b), (b, a))]
    if task == "word1":
        give = [("-", a, b) for a in range(10, 100) for b in range(2, a)]
        buy = [("+", a, b) for a in range(2, 98) for b in range(2, 100 - a)]
        split = [("/", b * q, b) for b in range(2, 10) for q in range(2, 100 // b + 1) if b * q < 100]
        return give + buy + split
    raise ValueError(f"unknown subset '{task}'{did_you_mean(task, list(TASKS))}")


def render(task: str, op: str, a: int, b: int, template: int, rng: random.Random | None = None) -> str:
    if task != "word1":
        return (ADD if op == "+" else MUL)[template].format(a=a, b=b)
    assert rng is not None
    return WORD[op][template].format(a=a, b=b, n=rng.choice(NAMES), o=rng.choice(OBJECTS))


def parse_tasks(subset: str | None) -> list[str]:
    """'add1,mul1' -> ['add1', 'mul1'] (in order, duplicates dropped); an unknown name is a ValueError."""
    names = [s.strip() for s in (subset or "").split(",") if s.strip()]
    if not names:
        raise ValueError(f"needs a subset: one or more of {', '.join(TASKS)}, comma-separated")
    for name in names:
        if name not in TASKS:
            raise ValueError(f"unknown subset '{name}'{did_you_mean(name, list(TASKS))}")
    return list(dict.fromkeys(names))


def task_questions(task: str, split: str, size: int, rng: random.Random) -> list[Question]:
    """One task's questions of a split: all of them for add1/mul1, else `size` distinct ones drawn by `rng`."""
    want = split == "test"
    ops = [t for t in operands(task) if is_held_out(*t) == want]
    if task in ("add1", "mul1"):
        k = len(ADD if task == "add1" else MUL)
        items = [(op, a, b, t) for op, a, b in ops for t in range(k)]
        return [
            Question(task, i, op, a, b, t, render(task, op, a, b, t)) for i, (op, a, b, t) in enumerate(items)
        ]
    by_op: dict[str, list[tuple[str, int, int]]] = {}
    for t in ops:
        by_op.setdefault(t[0], []).append(t)
    kinds = sorted(by_op)  # word1: each kind (give, buy, split) equally often, however many facts it has
    out: list[Question] = []
    seen: set[str] = set()
    for _ in range(50 * size):
        if len(out) == size:
            break
        op, a, b = rng.choice(by_op[rng.choice(kinds)])
        template = rng.randrange(len(WORD[op] if task == "word1" else ADD if op == "+" else MUL))
        text = render(task, op, a, b, template, rng)
        if text not in seen:
            seen.add(text)
            out.append(Question(task, len(out), op, a, b, template, text))
    return out


def questions(subset: str | None, split: str, size: int, seed: int) -> list[Question]:
    """The questions of `subset` (one task or a comma-separated mix) for a split, in a seeded order.

    The test split never depends on `seed` (its questions and their order are fixed, so a `limit` keeps the
    same evaluation set in every run); the train split's draw and order do."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'{did_you_mean(split, list(SPLITS))}")
    tasks = parse_tasks(subset)
    key = f"arithmetic_words-{split}" + ("" if split == "test" else f"-{seed}")
    out = [q for task in tasks for q in task_questions(task, split, size, random.Random(f"{key}-{task}"))]
    random.Random(key).shuffle(out)
    return out
