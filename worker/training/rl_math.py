"""The maths of KLong's progressive RL: advantages, staleness, the clipped policy-gradient loss.

No Django, and no torch at import time (the loss functions import it when called), so the job
engine, the tests and the benchmark share these functions and the advantage maths is testable
in microseconds.

Advantage (../shared/docs/klong-method.md, "Progressive RL"): in stage m, task t has n rollouts
j = 1..n, each split into K(m) sub-trajectories i = 1..K(m); Q(m,i,j) is the judge's rubric score
of the submission at the end of sub-trajectory i of rollout j, and

    A(m,i,j) = Q(m,i,j) - (1 / (n * K(m))) * sum_{j'} sum_{i'} Q(m,i',j')

No division by a standard deviation (GRPO's default normalisation is not KLong's). The same
A(m,i,j) weights every assistant token of sub-trajectory (i, j).

Where the splitter gives rollouts different window counts (a rollout cut early at the timeout
has fewer turns, so fewer windows), "n * K(m)" is the number of sub-trajectories the task's group
actually has, sum_j K_j: the mean is over every sub-trajectory of the task, each counted once,
which is the formula above whenever every K_j = K(m).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint


def task_advantages(q: Sequence[Sequence[float]]) -> list[list[float]]:
    """A(i, j) for one task: ``q[j][i]`` is Q of sub-trajectory i of rollout j.

    Returns the same shape. A task whose rollouts have no sub-trajectory at all gives empty lists.
    """
    count = sum(len(row) for row in q)
    if count == 0:
        return [[] for _ in q]
    for j, row in enumerate(q):
        for i, value in enumerate(row):
            if not math.isfinite(value):
                raise ValueError(f"Q of rollout {j}, sub-trajectory {i} is not a finite number: {value!r}")
    # math.fsum: the mean of 1,000s of scores in [0, 1] must not drift with the summation order
    mean = math.fsum(value for row in q for value in row) / count
    return [[value - mean for value in row] for row in q]


def batch_advantages(q_by_task: Mapping[Any, Sequence[Sequence[float]]]) -> dict[Any, list[list[float]]]:
    """Advantages of a whole batch: each task is its own group (never mixed with another task)."""
    return {task: task_advantages(q) for task, q in q_by_task.items()}


@dataclass(frozen=True, slots=True)
class Spread:
    """How spread out a batch's advantages are: the learning signal the batch carries."""

    std: float
    min: float
    max: float
    zero_groups: int  # tasks whose sub-trajectories all scored the same (no signal)

    def as_metrics(self) -> dict[str, float]:
        return {"advantage_std": self.std, "advantage_min": self.min, "advantage_max": self.max,
                "zero_advantage_tasks": float(self.zero_groups)}


def advantage_spread(advantages: Mapping[Any, Sequence[Sequence[float]]]) -> Spread:
    values = [a for groups in advantages.values() for row in groups for a in row]
    if not values:
        return Spread(0.0, 0.0, 0.0, len(advantages))
    mean = math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((a - mean) ** 2 for a in values) / len(values))
    zero = sum(1 for groups in advantages.values() if all(abs(a) < 1e-12 for row in groups for a in row))
    return Spread(std, min(values), max(values), zero)


def staleness(rollout_version: int, current_version: int) -> int:
    """How many policy updates happened since the rollout's policy produced it."""
    if rollout_version > current_version:
        raise ValueError(f"rollout from policy version {rollout_version} is newer than the policy ({current_version})")
    return current_version - rollout_version


def too_stale(rollout_version: int, current_version: int, max_staleness: int) -> bool:
    return staleness(rollout_version, current_version) > max_staleness


# --------------------------------------------------------------------------------- the loss


# Tokens per slice of the window whose logits exist at once: 1,024 x 152k vocabulary x 4 bytes is
# 0.6 GB, against 20 GB for a 32k window's whole logits (and as much again for their log_softmax).
LOGPROB_CHUNK = 1024
# Config fields of models whose logits are not just lm_head(hidden): those take the model's own forward.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def decoder_and_head(model: Any) -> tuple[Any, Any] | None:
    """(the transformer body giving hidden states, the lm_head) of a causal LM, peft-wrapped or not;
    None where the logits are more than lm_head(hidden) or the parts cannot be found."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or any(getattr(config, name, None) not in (None, 1, 1.0) for name in _LOGIT_TRANSFORMS):
        return None
    body = getattr(base, "base_model", None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if body is None or body is base or head is None:
        return None
    return body, head


def _slice_logprobs(head: Any, hidden: Any, targets: Any) -> Any:
    """log P(target) for one slice: logit of the target minus logsumexp, in fp32 (bf16 logits would
    lose the small differences the policy ratio is made of)."""
    logits = head(hidden).float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def token_logprobs(model: Any, input_ids: Any, attention_mask: Any, *, chunk_size: int | None = LOGPROB_CHUNK,
                   position_ids: Any = None) -> Any:
    """log P(token_t | tokens_<t) for t = 1..T-1 of every row: shape (B, T-1).

    The body runs once to its hidden states; lm_head, the fp32 upcast and the log-softmax run
    ``chunk_size`` positions at a time, so the [B, T, vocabulary] logits never exist whole. With
    gradients on, each slice is checkpointed: the backward pass recomputes its logits from the
    slice's hidden states instead of keeping them (what Liger's fused linear cross-entropy and
    verl's chunked entropy do, in plain torch). Equal to the whole-logits computation to float
    rounding, gradients too (tests/training/test_precision_lora_memory.py).

    ``chunk_size=None`` takes the model's own forward and its whole logits: for a wrapper whose
    body and head cannot be called on their own (a sharding engine that gathers the weights in
    the root module's forward).

    Packed rows (several windows end to end, padding-free): ``position_ids`` restart at 0 at each
    window and ``attention_mask`` is None; transformers then keeps each window's attention to
    itself (``masking_utils.find_packed_sequence_indices``). The log-prob at a window's last token
    (of the next window's first) means nothing: the caller's loss mask leaves it out.
    """
    if chunk_size is not None and chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    targets = input_ids[:, 1:]
    parts = decoder_and_head(model) if chunk_size is not None else None
    if parts is None:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       use_cache=False).logits[:, :-1, :].float()
        return torch.gather(torch.log_softmax(logits, dim=-1), 2, targets.unsqueeze(-1)).squeeze(-1)
    body, head = parts
    # no KV cache: scoring a window needs none, and a 32k window's cache is gigabytes
    hidden = body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                  use_cache=False).last_hidden_state[:, :-1]
    grad = torch.is_grad_enabled() and hidden.requires_grad
    out = []
    for start in range(0, hidden.shape[1], chunk_size):
        h, t = hidden[:, start:start + chunk_size], targets[:, start:start + chunk_size]
        if grad:
            out.append(checkpoint(_slice_logprobs, head, h, t, use_reentrant=False))
        else:
            out.append(_slice_logprobs(head, h, t))
    return torch.cat(out, dim=1) if out else targets.new_zeros(targets.shape, dtype=torch.float32)


@dataclass(frozen=True, slots=True)
class LossStats:
    loss: float
    pg_loss: float
    kl: float
    clip_fraction: float
    ratio_mean: float
    tokens: int
    # Sampler vs trainer (token-in/token-out): mean |log pi_old - log pi_sampler| over the tokens
    # whose sampler log-prob is known, and the share of those whose importance weight hit tis_cap.
    sampler_mismatch: float = 0.0
    tis_capped_fraction: float = 0.0
    sampled_tokens: int = 0  # tokens with a sampler log-prob (the two figures above are over these)


def clipped_pg_loss(
    logp: Any,
    old_logp: Any,
    advantages: Any,
    mask: Any,
    *,
    clip_eps: float,
    kl_coef: float = 0.0,
    ref_logp: Any = None,
    sampler_logp: Any = None,
    tis_cap: float = 2.0,
) -> tuple[Any, LossStats]:
    """The GRPO/PPO clipped objective over the masked (assistant) tokens, as a loss to minimise.

    Per token: ratio = exp(logp - old_logp),
        pg = -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)
    plus, with ``kl_coef`` > 0, kl_coef * KL(policy || reference) by the k3 estimator
    exp(ref - logp) - (ref - logp) - 1 (unbiased, always >= 0). ``advantages`` is one value per
    row (the sub-trajectory's A, broadcast to its tokens) or per token. The loss is the mean over
    every masked token of the batch, so a long window weighs by its tokens, as in the SFT loss.

    Truncated importance sampling (``sampler_logp``: the inference engine's log-probs of the
    sampled tokens, NaN where unknown): the rollouts came from the sampler (vLLM, SGLang, the
    local generate, maybe an older policy version mid-rollout), not from pi_old, so each token's
    loss is weighted by w = min(pi_old / pi_sampler, tis_cap), detached, as TRL's
    ``vllm_importance_sampling_correction``, verl's and slime's TIS do. Tokens without a sampler
    log-prob get w = 1.
    """

    if clip_eps <= 0:
        raise ValueError("clip_eps must be positive")
    if kl_coef < 0:
        raise ValueError("kl_coef cannot be negative")
    mask = mask.to(logp.dtype)
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1).expand_as(logp)
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    per_token = -torch.minimum(unclipped, clipped)
    tokens = mask.sum().clamp(min=1.0)
    mismatch = capped = torch.zeros((), dtype=logp.dtype, device=logp.device)
    sampled = torch.zeros_like(mask)
    if sampler_logp is not None:
        if tis_cap <= 0:
            raise ValueError("tis_cap must be positive")
        with torch.no_grad():
            known = torch.isfinite(sampler_logp)
            sampled = mask * known.to(mask.dtype)
            delta = torch.where(known, old_logp.detach() - sampler_logp, torch.zeros_like(old_logp))
            raw = torch.exp(delta)
            weight = torch.where(known, torch.clamp(raw, max=tis_cap), torch.ones_like(raw))
            count = sampled.sum().clamp(min=1.0)
            mismatch = (delta.abs() * sampled).sum() / count
            capped = ((raw > tis_cap).to(mask.dtype) * sampled).sum() / count
        per_token = per_token * weight
    pg = (per_token * mask).sum() / tokens
    kl = torch.zeros((), dtype=logp.dtype, device=logp.device)
    if kl_coef > 0:
        if ref_logp is None:
            raise ValueError("a KL penalty needs the reference model's log-probabilities")
        delta = ref_logp - logp
        kl = ((torch.exp(delta) - delta - 1.0) * mask).sum() / tokens
    loss = pg + kl_coef * kl
    with torch.no_grad():
        clipped_tokens = ((ratio - 1.0).abs() > clip_eps).to(logp.dtype)
        stats = LossStats(
            loss=float(loss), pg_loss=float(pg), kl=float(kl),
            clip_fraction=float((clipped_tokens * mask).sum() / tokens),
            ratio_mean=float((ratio * mask).sum() / tokens), tokens=int(mask.sum()),
            sampler_mismatch=float(mismatch), tis_capped_fraction=float(capped), sampled_tokens=int(sampled.sum()),
        )
    return loss, stats
