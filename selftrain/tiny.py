"""The tiny model of the CPU recipe, built here from nothing: a character-level tokenizer and a small Llama
pre-trained on synthetic arithmetic (worked solutions ending in `#### N`) and on the plain judge format, so
that its P(True) means something. Needs no hub: `selftrain run configs/tiny-cpu.yaml` calls `ensure_model`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import string
import time
from pathlib import Path

from selftrain.bandcheck import band_check, in_band
from selftrain.config import BandConfig, BootstrapConfig, ConfigError
from selftrain.data import synthetic
from selftrain.judge_warmup import warm_up_judge
from selftrain.packing import encode_batch, pack_batch
from selftrain.progress import track
from selftrain.prompts import PromptBuilder
from selftrain.rubric import render

log = logging.getLogger(__name__)

SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]
CHARS = sorted(set(string.printable) - set("\x0b\x0c\r"))


def build_tokenizer():  # noqa: ANN201 - transformers type
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIALS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def _solve_example(builder: PromptBuilder, rng: random.Random) -> tuple[str, str]:
    p = _train_problem(rng)
    return builder.question(p.question), " " + p.solution()


def _judge_example(builder: PromptBuilder, rng: random.Random, max_others: int = 2) -> tuple[str, str]:
    """A True/False verdict on a right or wrong worked solution, in the plain judge formats."""
    p = _train_problem(rng)
    right = rng.random() < 0.5
    text = p.solution() if right else synthetic.corrupt_solution(p, rng)
    reasoning, answer = (s.strip() for s in text.rsplit("####", 1))
    if rng.random() < 0.5:
        prompt = builder.answer_judge(p.question, reasoning, answer)
    else:
        others = []
        for _ in range(rng.randint(0, max_others)):
            other = p.solution() if rng.random() < 0.5 else synthetic.corrupt_solution(p, rng)
            others.append(other.rsplit("####", 1)[0].strip())
        prompt = builder.reasoning_judge(p.question, reasoning, others)
    return prompt, "A" if right else "B"


def _rubric_example(builder: PromptBuilder, rng: random.Random) -> tuple[str, str]:
    """A Self-Rewarding judgment in the compact rubric's format (selftrain.rubric) of a right or wrong worked
    solution, as the policy writes them (" <steps> #### N"): a right one earns all 5 points, a wrong one the
    single point for being relevant, so that `Score: N` parses and orders right over wrong."""

    p = _train_problem(rng)
    right = rng.random() < 0.5
    text = p.solution() if right else synthetic.corrupt_solution(p, rng)
    verdict = " Correct. Score: 5" if right else " Wrong. Score: 1"
    return builder.user_turn(render("compact", p.question, text.strip())), verdict


def _digit_problem(rng: random.Random, long_fraction: float) -> synthetic.DigitSum:
    lo, hi = synthetic.HARD_OPERANDS if rng.random() < long_fraction else (2, synthetic.EASY_OPERANDS[1])
    while True:
        p = synthetic.random_digit_sum(rng, lo, hi)
        if not synthetic.digit_sum_held_out(p):
            return p


def _digit_solve_example(builder: PromptBuilder, rng: random.Random, long_fraction: float) -> tuple[str, str]:
    p = _digit_problem(rng, long_fraction)
    return builder.question(p.question), " " + p.solution(rng)


def _digit_judge_example(builder: PromptBuilder, rng: random.Random, long_fraction: float) -> tuple[str, str]:
    """The plain judge formats on digit sums: a right (random-order) or corrupted solution, in the answer
    judge's format or the CORE-PO reasoning judge's (beside 0-2 other right or wrong solutions)."""
    p = _digit_problem(rng, long_fraction)
    right = rng.random() < 0.5
    text = p.solution(rng) if right else synthetic.corrupt_digit_sum(p, rng)
    reasoning, answer = (s.strip() for s in text.rsplit("####", 1))
    if rng.random() < 0.5:
        prompt = builder.answer_judge(p.question, reasoning, answer)
    else:
        others = []
        for _ in range(rng.randint(0, 2)):
            other = p.solution(rng) if rng.random() < 0.5 else synthetic.corrupt_digit_sum(p, rng)
            others.append(other.rsplit("####", 1)[0].strip())
        prompt = builder.reasoning_judge(p.question, reasoning, others)
    return prompt, "A" if right else "B"


def digit_batch(builder: PromptBuilder, rng: random.Random, cfg: BootstrapConfig) -> list[tuple[str, str]]:
    """One digit-sums pre-training batch of (prompt, target): a whole batch of judge examples (they are ~5x
    longer, and mixed in they would pad every solve row), or solve rows with `arithmetic_fraction` of them from
    the arithmetic task, mixed per row so that every batch keeps the uniform-digit symmetry broken."""
    if rng.random() < cfg.judge_fraction:
        return [_digit_judge_example(builder, rng, cfg.long_fraction) for _ in range(cfg.batch_size)]
    return [
        _solve_example(builder, rng)
        if cfg.arithmetic_fraction
        and rng.random() < cfg.arithmetic_fraction  # no draw at 0: same stream as before
        else _digit_solve_example(builder, rng, cfg.long_fraction)
        for _ in range(cfg.batch_size)
    ]


def _train_problem(rng: random.Random) -> synthetic.Problem:
    while True:
        p = synthetic.random_problem(rng)
        if not synthetic.is_held_out(p):
            return p


class BootstrapError(ConfigError):
    """Pre-training did not land in the band: the recipe's bootstrap cannot give a base with headroom."""


def build_tiny_model(out_dir: Path, cfg: BootstrapConfig) -> None:
    """Pre-train the tiny Llama and save model + tokenizer to `out_dir` (atomically: temp dir + rename).

    task=digit_sums: pre-train until a held-out check lands in `cfg.band` (checked every `check_every` steps
    from `min_steps`); a model that overshoots it or never reaches it within `steps` is an error."""
    import torch

    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        _build(out_dir, cfg)
    finally:
        torch.set_num_threads(threads)


def build_model(tokenizer, cfg: BootstrapConfig):  # noqa: ANN001, ANN201 - transformers types
    """A freshly initialised tiny model for `cfg` (seed torch first: the weights come from its random stream)."""
    common = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if cfg.arch == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        no_dropout = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
        return GPT2LMHeadModel(
            GPT2Config(
                n_embd=cfg.hidden_size,
                n_layer=cfg.num_layers,
                n_head=cfg.num_heads,
                n_positions=512,
                **common,
                **no_dropout,
            )
        )
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(
        LlamaConfig(
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size or cfg.hidden_size * 4,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_heads,
            max_position_embeddings=1024,
            tie_word_embeddings=True,
            **common,
        )
    )


def _build(out_dir: Path, cfg: BootstrapConfig) -> None:
    import torch

    torch.manual_seed(cfg.seed)
    tokenizer = build_tokenizer()
    builder = PromptBuilder(tokenizer, template="plain")
    model = build_model(tokenizer, cfg)
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "pre-training a %.2fM-parameter tiny %s for %d steps -> %s",
        n_params / 1e6,
        cfg.arch,
        cfg.steps,
        out_dir,
    )
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    warmup = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps))),
    )
    rng = random.Random(cfg.seed)
    start = time.time()
    digits = cfg.task == "digit_sums"
    band = cfg.band if cfg.band is not None else BandConfig()
    check: dict | None = None
    model.train()
    for step in track(range(cfg.steps), "bootstrap tiny model", unit="step"):
        if digits:
            batch = digit_batch(builder, rng, cfg)
        else:  # whole batches of one kind: judge prompts are ~5x longer, mixed in they pad every solve row
            draw = rng.random()
            make = _judge_example if draw < cfg.judge_fraction else _solve_example
            if cfg.rubric_fraction and draw >= 1 - cfg.rubric_fraction:  # no extra draw: same stream at 0
                make = _rubric_example
            batch = [make(builder, rng) for _ in range(cfg.batch_size)]
        if cfg.pack_width:
            loss = model(**pack_batch(tokenizer, batch, cfg.pack_width)).loss
        else:
            input_ids, label_t, mask = encode_batch(tokenizer, batch)
            loss = model(input_ids=input_ids, attention_mask=mask, labels=label_t).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == cfg.steps - 1:
            log.info(
                "bootstrap step %d/%d loss %.4f (%.0fs)",
                step + 1,
                cfg.steps,
                loss.item(),
                time.time() - start,
            )
        done = step + 1
        if digits and done >= cfg.min_steps and (done % cfg.check_every == 0 or done == cfg.steps):
            check = band_check(model, tokenizer, builder, band, cfg.seed)
            model.train()
            log.info(
                "bootstrap check at step %d: hard greedy %.3f, hard pass@%d %.3f, easy greedy %.3f "
                "(band: hard %.2f-%.2f, pass@%d >= %.2f, easy >= %.2f) (%.0fs)",
                done,
                check["hard"],
                band.k,
                check["pass_at_k"],
                check["easy"],
                band.hard_min,
                band.hard_max,
                band.k,
                band.pass_at_k_min,
                band.easy_min,
                time.time() - start,
            )
            check["step"] = done
            if check["hard"] > band.hard_max:
                raise BootstrapError(
                    f"bootstrap overshot the band at step {done}: hard-set greedy {check['hard']:.3f} > "
                    f"{band.hard_max} (a base that already solves the long chains leaves self-training "
                    "nothing to sharpen): lower model.bootstrap.check_every or learning_rate, or change seed"
                )
            if in_band(check, band):
                log.info("bootstrap: in the band at step %d; stopping pre-training there", done)
                break
    if digits and (check is None or not in_band(check, band)):
        got = "no check ran" if check is None else f"last check {check}"
        raise BootstrapError(
            f"bootstrap did not reach the band within {cfg.steps} steps ({got}): raise model.bootstrap.steps"
        )

    warmup = None
    if digits and cfg.judge_warmup is not None:
        warmup = warm_up_judge(
            model,
            tokenizer,
            builder,
            cfg.judge_warmup,
            lambda r: _digit_solve_example(builder, r, cfg.long_fraction),
            cfg.seed,
        )
        after = band_check(model, tokenizer, builder, band, cfg.seed)
        warmup["check_after"] = after
        log.info("bootstrap check after the judge warm-up: %s", after)
        if not in_band(after, band):
            # kept, not refused: the warm-up is a judge study option, and how far it moves the policy is one of
            # its results (README, "The digit-sums toy"); bootstrap.json records both checks
            log.warning(
                "the judge warm-up moved the model out of the band (%s): raise model.bootstrap.judge_warmup."
                "solve_fraction or lower its learning_rate or steps to keep the policy",
                after,
            )

    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    record = {**cfg.model_dump(), "parameters": n_params}
    if check is not None:
        record["check"] = check
    if warmup is not None:
        record["judge_warmup_result"] = warmup
    (tmp / "bootstrap.json").write_text(json.dumps(record, indent=2))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out_dir)
    log.info("tiny model ready at %s (%.0fs)", out_dir, time.time() - start)


def _check_built_with(path: Path, bootstrap: BootstrapConfig) -> None:
    """A cached tiny model must come from the recipe's bootstrap settings. Reusing one built with others would
    silently change every result, and rebuilding in place would change the model under existing runs."""
    record = path / "bootstrap.json"
    if not record.exists():
        return  # not built by selftrain: the user's own model
    built = json.loads(record.read_text())
    wanted = bootstrap.model_dump()
    # a field added after the model was built counts as built with its default
    defaults = BootstrapConfig.model_construct().model_dump()
    built = {k: built.get(k, defaults.get(k)) for k in wanted} | {
        k: v for k, v in built.items() if k in wanted
    }
    diff = [f"{k} {v} vs {built.get(k, 'absent')}" for k, v in wanted.items() if built.get(k) != v]
    if diff:
        raise ConfigError(
            f"model.bootstrap differs from the one {path} was built with ({', '.join(diff)}, recipe vs built): "
            "move that folder away to rebuild it, or set model.path to a new folder"
        )


def ensure_model(path: str, bootstrap: BootstrapConfig | None) -> None:
    """Build the tiny model at `path` if it is absent and the recipe says how; otherwise check it exists."""

    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        # refused before anything runs: building "there" would pre-train for minutes, then fail on save
        raise ConfigError(f"model.path: {path} is a file, not a model folder")
    if (p / "config.json").exists():
        if bootstrap is not None:
            _check_built_with(p, bootstrap)
        return
    if p.is_dir() and any(p.iterdir()):
        raise ConfigError(f"model.path: {path} is a folder without a model in it (no config.json)")
    if bootstrap is not None:
        log.warning(
            "model.path %s holds no model: building the tiny model there, as the recipe's model.bootstrap "
            "section asks (%d steps)",
            path,
            bootstrap.steps,
        )
        try:
            build_tiny_model(p, bootstrap)
        finally:
            # a build that failed (disk full, interrupted) must not leave its temp folder behind
            shutil.rmtree(p.with_name(f".{p.name}.tmp-{os.getpid()}"), ignore_errors=True)
        return
    looks_local = path.startswith((".", "/", "~")) or p.exists() or path.count("/") != 1
    if looks_local:
        raise FileNotFoundError(
            f"model.path: no model at {path} (and no model.bootstrap section to build one)"
        )
