"""Text in, text out: one sampled response per prompt, for evaluation and analysis (the paper's §8).

Prompts are tokenized LEFT-padded, sampled with :func:`nlhf.sampling.decode.generate` (from π_θ, or from the
mixture with ``ref`` and β), and decoded without EOS and padding; one seed makes a call repeatable.
"""

from __future__ import annotations

from typing import Sequence

import torch

from nlhf.sampling.decode import generate

@torch.no_grad()
def sample_texts(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, temperature: float = 1.0,
                 seed: int = 0, batch_size: int = 256, ref=None, beta: float = 0.0,
                 return_finished: bool = False):
    """One response per prompt (repeat a prompt to get several), decoded without EOS/padding; repeatable by seed.

    With ``return_finished`` also a list of bools: whether each response ended with EOS within
    ``max_new_tokens`` (a truncated response is malformed whatever its text)."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    out: list[str] = []
    finished: list[bool] = []
    for i in range(0, len(prompts), batch_size):
        chunk = list(prompts[i: i + batch_size])
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        g = generate(model, enc["input_ids"], enc["attention_mask"], ref=ref, beta=beta,
                     max_new_tokens=max_new_tokens, temperature=temperature, eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id, generator=gen)
        for row, m in zip(g.response.tolist(), g.response_mask.tolist()):
            toks = [t for t, k in zip(row, m) if k and t != tokenizer.eos_token_id]
            out.append(tokenizer.decode(toks, skip_special_tokens=True))
            finished.append(any(k and t == tokenizer.eos_token_id for t, k in zip(row, m)))
    return (out, finished) if return_finished else out
