"""Pre-training batches for the tiny model: (prompt, target) rows padded, or packed into fixed-width sequences
with a block-diagonal mask (the same loss for fewer tokens: on digit sums 45 % of a padded batch is padding)."""

from __future__ import annotations


def _encode_rows(tokenizer, batch: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:  # noqa: ANN001
    """(prompt, target) -> (ids, labels) with the loss on the target and eos only."""
    rows = []
    for prompt, target in batch:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        t = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((p + t, [-100] * len(p) + t))
    return rows


def encode_batch(tokenizer, batch: list[tuple[str, str]]):  # noqa: ANN001, ANN201 - transformers/torch types
    """(prompt, target) rows -> right-padded input ids, labels (loss on the target and eos only), mask."""
    import torch

    rows = _encode_rows(tokenizer, batch)
    width = max(len(ids) for ids, _ in rows)
    return (
        torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids, _ in rows]),
        torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows]),
        torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows]),
    )


def pack_batch(tokenizer, batch: list[tuple[str, str]], width: int) -> dict:  # noqa: ANN001
    """(prompt, target) rows packed first-fit-decreasing into sequences of `width` tokens (or the longest
    row's): model kwargs with a 4D block-diagonal causal mask and positions restarting at each row, so that
    every row sees only itself, as padded. A row's last token predicts the next row's first, a prompt token
    labelled -100, so no loss crosses rows; the mean over target tokens is the padded batch's."""
    import torch

    rows = sorted(_encode_rows(tokenizer, batch), key=lambda r: -len(r[0]))
    width = max(width, len(rows[0][0]))
    bins: list[list[tuple[list[int], list[int]]]] = []
    used: list[int] = []
    for row in rows:
        k = next((k for k, n in enumerate(used) if n + len(row[0]) <= width), len(bins))
        if k == len(bins):
            bins.append([])
            used.append(0)
        bins[k].append(row)
        used[k] += len(row[0])
    n = len(bins)
    input_ids = torch.full((n, width), tokenizer.pad_token_id)
    labels = torch.full((n, width), -100)
    positions = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, 1, width, width), dtype=torch.bool)
    for i, members in enumerate(bins):
        at = 0
        for ids, lab in members:
            span = slice(at, at + len(ids))
            input_ids[i, span], labels[i, span] = torch.tensor(ids), torch.tensor(lab)
            positions[i, span] = torch.arange(len(ids))
            mask[i, 0, span, span] = torch.ones(len(ids), len(ids), dtype=torch.bool).tril()
            at += len(ids)
        # padding attends to itself only: a query row with nothing to attend to gives NaN in sdpa
        mask[i, 0, at:, at:] = torch.eye(width - at, dtype=torch.bool)
    return {"input_ids": input_ids, "labels": labels, "position_ids": positions, "attention_mask": mask}
