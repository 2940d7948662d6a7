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

from selftrain.config import BootstrapConfig
from selftrain.data import synthetic
from selftrain.progress import track
from selftrain.prompts import PromptBuilder

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


def _train_problem(rng: random.Random) -> synthetic.Problem:
    while True:
        p = synthetic.random_problem(rng)
        if not synthetic.is_held_out(p):
            return p


def build_tiny_model(out_dir: Path, cfg: BootstrapConfig) -> None:
    """Pre-train the tiny Llama and save model + tokenizer to `out_dir` (atomically: temp dir + rename)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    tokenizer = build_tokenizer()
    builder = PromptBuilder(tokenizer, template="plain")
    model_cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.hidden_size * 4,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(model_cfg)
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "pre-training a %.2fM-parameter tiny Llama for %d steps -> %s", n_params / 1e6, cfg.steps, out_dir
    )
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.01)
    warmup = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps))),
    )
    rng = random.Random(cfg.seed)
    start = time.time()
    model.train()
    for step in track(range(cfg.steps), "bootstrap tiny model", unit="step"):
        # Whole batches of one kind: judge prompts are ~5x longer, and mixing them pads every solve example.
        make = _judge_example if rng.random() < cfg.judge_fraction else _solve_example
        batch = [make(builder, rng) for _ in range(cfg.batch_size)]
        ids, labels = [], []
        for prompt, target in batch:
            p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            t = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            ids.append(p + t)
            labels.append([-100] * len(p) + t)  # loss on the answer only
        width = max(len(x) for x in ids)
        input_ids = torch.tensor([x + [tokenizer.pad_token_id] * (width - len(x)) for x in ids])
        label_t = torch.tensor([y + [-100] * (width - len(y)) for y in labels])
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
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

    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "bootstrap.json").write_text(json.dumps({**cfg.model_dump(), "parameters": n_params}, indent=2))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out_dir)
    log.info("tiny model ready at %s (%.0fs)", out_dir, time.time() - start)


def _check_built_with(path: Path, bootstrap: BootstrapConfig) -> None:
    """A cached tiny model must come from the recipe's bootstrap settings. Reusing one built with others would
    silently change every result, and rebuilding in place would change the model under existing runs."""
    from selftrain.config import ConfigError

    record = path / "bootstrap.json"
    if not record.exists():
        return  # not built by selftrain: the user's own model
    built = json.loads(record.read_text())
    wanted = bootstrap.model_dump()
    diff = [f"{k} {v} vs {built.get(k, 'absent')}" for k, v in wanted.items() if built.get(k) != v]
    if diff:
        raise ConfigError(
            f"model.bootstrap differs from the one {path} was built with ({', '.join(diff)}, recipe vs built): "
            "move that folder away to rebuild it, or set model.path to a new folder"
        )


def ensure_model(path: str, bootstrap: BootstrapConfig | None) -> None:
    """Build the tiny model at `path` if it is absent and the recipe says how; otherwise check it exists."""
    from selftrain.config import ConfigError

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
