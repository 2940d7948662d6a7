"""The digit-sums bootstrap's held-out check: is the model in the band where self-training has headroom?

Greedy accuracy on hard (6-8 operands) and easy (4-5) check questions and hard pass@k, measured on questions
disjoint from pre-training and from the evaluation sets (TOY-STUDIES.md: outside the band there is nothing to
sharpen, or nothing left to gain).
"""

from __future__ import annotations

from selftrain.config import BandConfig
from selftrain.data import synthetic
from selftrain.prompts import PromptBuilder


def in_band(check: dict, band: BandConfig) -> bool:
    return (
        band.hard_min <= check["hard"] <= band.hard_max
        and check["pass_at_k"] >= band.pass_at_k_min
        and check["easy"] >= band.easy_min
    )


def _generate(model, tokenizer, prompts: list[str], n: int, temperature: float, max_new: int = 64) -> list:  # noqa: ANN001
    """n completions per prompt (greedy when temperature is 0), decoded up to the first eos."""
    import torch

    tokenizer.padding_side = "left"
    out = []
    step = max(1, 256 // n)
    for i in range(0, len(prompts), step):
        enc = tokenizer(prompts[i : i + step], add_special_tokens=False, return_tensors="pt", padding=True)
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0} if temperature else {}
        with torch.no_grad():
            gen = model.generate(
                **enc,
                max_new_tokens=max_new,
                num_return_sequences=n,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                do_sample=bool(temperature),
                **{k: v for k, v in sampling.items() if k != "do_sample"},
            )
        texts = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        out.extend(texts[j * n : (j + 1) * n] for j in range(len(texts) // n))
    return out


def _final(text: str) -> str | None:
    if "####" not in text:
        return None
    return text.rsplit("####", 1)[1].strip() or None


def band_check(model, tokenizer, builder: PromptBuilder, band: BandConfig, seed: int) -> dict:  # noqa: ANN001
    """Greedy accuracy on held-out hard (6-8 operands) and easy (4-5) check questions, and hard pass@k at
    `band.temperature`; the check questions are disjoint from training and drawn apart from the eval sets."""
    import torch

    model.eval()
    hard = synthetic.digit_sums("check-hard", band.hard_questions, seed)
    easy = synthetic.digit_sums("check-easy", band.easy_questions, seed)

    def greedy(problems: list) -> float:
        outs = _generate(model, tokenizer, [builder.question(p.question) for p in problems], 1, 0.0)
        return sum(_final(o[0]) == str(p.answer()) for o, p in zip(outs, problems, strict=True)) / len(
            problems
        )

    result = {"hard": round(greedy(hard), 4), "easy": round(greedy(easy), 4)}
    sampled = hard[: band.pass_questions]
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    outs = _generate(
        model, tokenizer, [builder.question(p.question) for p in sampled], band.k, band.temperature
    )
    torch.random.set_rng_state(state)  # the check must not change the pre-training's random stream
    hits = [[_final(t) == str(p.answer()) for t in o] for o, p in zip(outs, sampled, strict=True)]
    result["pass_at_k"] = round(sum(any(h) for h in hits) / len(hits), 4)
    result["sample_accuracy"] = round(sum(map(sum, hits)) / (len(hits) * band.k), 4)
    return result
