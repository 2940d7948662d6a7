"""Why a digit-sums pre-training does (not) learn: teacher-forced accuracy per kind of digit, every N steps.

Pre-trains the tiny model exactly as `model.bootstrap` would (same tokenizer, model, batches: `tiny.digit_batch`),
but instead of the band check it reads, on 128 fixed digit-sum sequences, how often the next-token argmax is
right at each kind of digit in the solution `a+b=c c+d=e ... #### e`:
  op    the operand after `+` (random order: partly a coin flip, chance ~1/remaining)
  fact  the digit after `=` (the mod-10 fact: needs both operands two and four tokens back)
  copy  the running digit repeated at the start of the next step (one token back)
  final the digit after `####`
A model stuck at chance on `copy` has not started to read its context at all (issue 19's plateau).

    python bench/toy_probe.py --steps 600                                   # the recipe's settings
    python bench/toy_probe.py --steps 600 --arithmetic-fraction 0 --weight-decay 0.01   # the old ones
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from selftrain.config import BootstrapConfig
from selftrain.packing import encode_batch
from selftrain.prompts import PromptBuilder
from selftrain.recipes import load_config
from selftrain.tiny import build_model, build_tokenizer, digit_batch

KINDS = ("op", "fact", "copy", "final")


def digit_kinds(target: str) -> list[str | None]:
    """The kind of each character of a worked solution (None: not a digit we score)."""
    kinds: list[str | None] = []
    for j, c in enumerate(target):
        prev = target[j - 1] if j else ""
        if not c.isdigit():
            kinds.append(None)
        elif "#" in target[max(0, j - 3) : j]:
            kinds.append("final")
        elif prev == "+":
            kinds.append("op")
        elif prev == "=":
            kinds.append("fact")
        elif prev == " " and j > 1:
            kinds.append("copy")
        else:
            kinds.append(None)  # the first operand: a free choice
    return kinds


def kinds_of(labels: torch.Tensor, rows: list[tuple[str, str]]) -> list[list[str | None]]:
    """Per position of an `encode_batch` row, the kind of digit there; the target starts at its first label."""
    out = []
    for row_labels, (_, target) in zip(labels.tolist(), rows, strict=True):
        start = next(i for i, y in enumerate(row_labels) if y != -100)
        kinds = [None] * start + digit_kinds(target)
        out.append(kinds + [None] * (len(row_labels) - len(kinds)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="configs/tiny-digits.yaml", help="its model.bootstrap is the base")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--arithmetic-fraction", type=float)
    ap.add_argument("--weight-decay", type=float)
    ap.add_argument("--learning-rate", type=float)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    base = load_config(args.recipe).model.bootstrap
    assert base is not None, f"{args.recipe} has no model.bootstrap section"
    changes = {
        k: v
        for k, v in {
            "arithmetic_fraction": args.arithmetic_fraction,
            "weight_decay": args.weight_decay,
            "learning_rate": args.learning_rate,
            "seed": args.seed,
        }.items()
        if v is not None
    }
    cfg = BootstrapConfig(**{**base.model_dump(), **changes, "judge_fraction": 0.0})
    torch.set_num_threads(args.threads)
    torch.manual_seed(cfg.seed)
    tokenizer = build_tokenizer()
    builder = PromptBuilder(tokenizer, template="plain")
    model = build_model(tokenizer, cfg)
    # constant lr after a short warm-up: the probe asks when a skill appears, not what a schedule ends at
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    probe_cfg = BootstrapConfig(**{**cfg.model_dump(), "arithmetic_fraction": 0.0, "batch_size": 128})
    eval_rows = digit_batch(builder, random.Random(12345), probe_cfg)
    x_eval, labels_eval, m_eval = encode_batch(tokenizer, eval_rows)
    kinds_eval = kinds_of(labels_eval, eval_rows)
    rng = random.Random(cfg.seed)
    print(f"# {cfg.model_dump()}")
    print("step  loss   " + "  ".join(f"{k:>5}" for k in KINDS) + "  seconds")
    start = time.time()
    for step in range(1, args.steps + 1):
        x, y, m = encode_batch(tokenizer, digit_batch(builder, rng, cfg))
        model.train()
        loss = model(input_ids=x, attention_mask=m, labels=y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for group in opt.param_groups:
            group["lr"] = cfg.learning_rate * min(1.0, step / 20)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % args.every == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                pred = model(input_ids=x_eval, attention_mask=m_eval).logits.argmax(-1)
            hits = {k: [0, 0] for k in KINDS}
            for r, row in enumerate(kinds_eval):
                for c, kind in enumerate(row):
                    if kind is not None:
                        hits[kind][0] += int(pred[r, c - 1] == x_eval[r, c])
                        hits[kind][1] += 1
            accs = "  ".join(f"{h / max(n, 1):5.3f}" for h, n in hits.values())
            print(f"{step:4d}  {loss.item():.3f}  {accs}  {time.time() - start:.0f}", flush=True)
    final = {k: round(h / max(n, 1), 3) for k, (h, n) in hits.items()}
    print(f"RESULT steps={args.steps} " + " ".join(f"{k}={v}" for k, v in final.items()))


if __name__ == "__main__":
    main()
