"""Batched sampling from a policy and from the token-level geometric mixture (the paper's §7, App. F.1).

Nash-MD-PG needs two samples per prompt: y ~ π_θ(·|x) and y' ~ π_θ^β(·|x), where the opponent is the geometric
mixture log π_θ^β = (1−β) log π_θ + β log μ + c(x), drawn token by token (:mod:`nlhf.sampling.mixture`).

* :mod:`nlhf.sampling.mixture`: the per-token mixture softmax((1−β)·logits_θ + β·logits_μ);
* :mod:`nlhf.sampling.decode`: ``generate`` / ``generate_uncached``, the decode loop shared by every backend;
* :mod:`nlhf.sampling.transformers_backend`: the decode loop's backend for any ``transformers`` causal LM
  (:mod:`nlhf.sampling.fast_decode` is the GPT-2 one);
* :mod:`nlhf.sampling.transformers_compat`: calling a ``transformers`` model across versions, positions from masks;
* :mod:`nlhf.sampling.texts`: ``sample_texts``, text in, text out;
* :mod:`nlhf.sampling.logprobs`: ``response_logprobs``, log π(y_n | x, y_<n) of a sampled response.
"""
