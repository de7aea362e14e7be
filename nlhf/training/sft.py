"""Supervised fine-tuning of the policy on (prompt, reference summary) pairs — the paper's SFT policy μ (§8).

Loss: mean token cross-entropy on the summary tokens and the closing EOS only (prompt tokens are context).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def tokenize_sft(tokenizer, prompts: list[str], completions: list[str]) -> list[tuple[list[int], int]]:
    """Each example → (prompt ids + completion ids + [eos], number of prompt tokens)."""
    p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(completions, add_special_tokens=False)["input_ids"]
    return [(p + c + [tokenizer.eos_token_id], len(p)) for p, c in zip(p_ids, c_ids)]


def sft_batch(examples: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (−100 on prompt and padding)."""
    L = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), L), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), L), -100, dtype=torch.long)
    attn = torch.zeros((len(examples), L), dtype=torch.long)
    for i, (ids, plen) in enumerate(examples):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attn[i, : len(ids)] = 1
        labels[i, plen: len(ids)] = torch.tensor(ids[plen:])
    return {"input_ids": input_ids, "attention_mask": attn, "labels": labels}


def sft_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-token cross-entropy on label positions: −mean log π(y_n | x, y_<n)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(),
                           ignore_index=-100)
