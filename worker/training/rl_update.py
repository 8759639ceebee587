"""The RL update: the policy being trained, its optimizer and reference model, one iteration's
clipped policy-gradient step on a batch of sub-trajectories, and the stage checkpoints.

``train_rl`` (worker/training/rl.py) drives a trainer through this interface; the rollout side
never touches the optimizer. ``LocalTrainer`` trains in this process on one device.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from apps.trajectories.splitting import IGNORE_INDEX
from worker.training.policy_io import autocast, load_policy, trainable_parameters
from worker.training.rl_math import LossStats, clipped_pg_loss, token_logprobs

if TYPE_CHECKING:
    from worker.training.rl import RLSettings, SubTrajectory

# Beside each stage checkpoint's weights: the optimizer state the next stage (or a resumed job) continues.
OPTIMIZER_FILE = "optimizer.pt"


def load_model(path: str | Path, device: str, *, precision: str = "bf16", lora: str = "train",
               trainable: bool = True, gradient_checkpointing: bool = False) -> Any:
    """The policy in ``path`` (full or LoRA) with fp32 master weights: ``policy_io.load_policy``."""
    return load_policy(path, device, precision=precision, lora=lora, trainable=trainable,
                       gradient_checkpointing=gradient_checkpointing)


def _pad(rows: Sequence[Sequence[int]], value: int) -> list[list[int]]:
    width = max(len(r) for r in rows)
    return [list(r) + [value] * (width - len(r)) for r in rows]


def _sampler_row(example: Any) -> list[float]:
    """The sampler's log-prob of each token of a window, NaN where unknown."""
    return [float("nan") if v is None else float(v)
            for v in (example.sampler_logprobs or [None] * len(example.input_ids))]


def _minibatch(subs: Sequence[SubTrajectory], pad_id: int, device: Any, *, packed: bool = False) -> dict[str, Any]:
    """The tensors of one minibatch; every per-token tensor is shifted like the log-probs (position
    t holds what predicts token t+1): the loss mask, the sampler's log-probs, the advantages."""
    if packed:
        return _packed_minibatch(subs, device)
    examples = [s.example for s in subs]
    input_ids = torch.tensor(_pad([e.input_ids for e in examples], pad_id), device=device)
    labels = torch.tensor(_pad([e.labels for e in examples], IGNORE_INDEX), device=device)
    attention = torch.tensor(_pad([[1] * len(e.input_ids) for e in examples], 0), device=device)
    sampler = [_sampler_row(e) for e in examples]
    return {
        "sampler_logp": torch.tensor(_pad(sampler, float("nan")), dtype=torch.float32, device=device)[:, 1:],
        "input_ids": input_ids,
        "attention_mask": attention,
        # logprob t predicts token t+1: the loss mask is the labels shifted by one
        "mask": labels[:, 1:] != IGNORE_INDEX,
        "advantages": torch.tensor([s.advantage for s in subs], dtype=torch.float32, device=device),
    }


def _packed_minibatch(subs: Sequence[SubTrajectory], device: Any) -> dict[str, Any]:
    """Padding-free: the minibatch's windows end to end in one row, positions restarting at 0 at
    each window (transformers keeps each window's attention to itself), the advantages per token.
    No pad token is computed, whatever the spread of the windows' lengths."""
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    advantages: list[float] = []
    sampler: list[float] = []
    for sub in subs:
        e = sub.example
        if ids:
            labels.append(IGNORE_INDEX)  # what the last window's end "predicts" is not a target
            labels += e.labels[1:]
        else:
            labels += e.labels
        ids += e.input_ids
        positions += range(len(e.input_ids))
        advantages += [sub.advantage] * len(e.input_ids)
        sampler += _sampler_row(e)

    def row(values: list[Any], dtype: Any = torch.long) -> Any:
        return torch.tensor([values], dtype=dtype, device=device)

    return {
        "input_ids": row(ids),
        "attention_mask": None,
        "position_ids": row(positions),
        "mask": row(labels)[:, 1:] != IGNORE_INDEX,
        "advantages": row(advantages, torch.float32)[:, 1:],
        "sampler_logp": row(sampler, torch.float32)[:, 1:],
    }


def _logprobs(model: Any, batch: dict[str, Any]) -> Any:
    return token_logprobs(model, batch["input_ids"], batch["attention_mask"], position_ids=batch.get("position_ids"))


class Shard(Protocol):
    """This rank's part of a data-parallel update (worker/training/sharded.py): which rows of each
    minibatch it trains, its loss's weight in the global token mean, every rank's stats."""

    device: Any  # where the inputs go (with parameters offloaded to the CPU, still the GPU)

    def part(self, group: Sequence[SubTrajectory]) -> Sequence[SubTrajectory]: ...

    def scale(self, loss: Any, mask: Any) -> Any: ...

    def gather(self, stats: list[LossStats]) -> list[LossStats]: ...


def plan_minibatches(subs: Sequence[SubTrajectory], size: int) -> list[list[SubTrajectory]]:
    """The sub-trajectories in minibatches of ``size``, sorted by length: a minibatch's rows are
    padded to its longest, so neighbours in length waste the least compute and memory on padding
    (a 2k-token window beside a 32k one would carry 30k pad tokens). The sort is stable."""
    ordered = sorted(subs, key=lambda s: len(s.example.input_ids))
    size = max(1, size)
    return [ordered[k:k + size] for k in range(0, len(ordered), size)]


def train_on_batch(model: Any, ref_model: Any, optimizer: Any, subs: Sequence[SubTrajectory],
                   settings: RLSettings, pad_id: int, *, shard: Shard | None = None) -> LossStats | None:
    """One iteration's update: ppo_epochs passes over the sub-trajectories in minibatches.

    With ``shard`` each rank builds only its part of every minibatch; the minibatches, their
    number and the loss are the 1-rank run's, so the ranks' averaged gradients are its gradients.
    """
    trainable = [s for s in subs if s.example is not None and s.example.loss_tokens]
    if not trainable:
        return None
    device = shard.device if shard else next(model.parameters()).device
    groups = plan_minibatches(trainable, settings.minibatch_size)
    batches = [_minibatch(shard.part(g) if shard else g, pad_id, device, packed=settings.packing) for g in groups]
    model.eval()
    with torch.no_grad(), autocast(settings.precision, device):
        # the ratio's denominator: the policy before this iteration's update, on the same inputs
        for b in batches:
            b["old_logp"] = _logprobs(model, b)
            if settings.kl_coef > 0:
                b["ref_logp"] = _logprobs(ref_model, b)
    model.train()
    stats: list[LossStats] = []
    for _ in range(settings.ppo_epochs):
        for b in batches:
            with autocast(settings.precision, device):  # the forward in bf16 under precision=bf16
                logp = _logprobs(model, b)
            loss, s = clipped_pg_loss(
                logp, b["old_logp"], b["advantages"], b["mask"], clip_eps=settings.clip_eps,
                kl_coef=settings.kl_coef, ref_logp=b.get("ref_logp"), sampler_logp=b["sampler_logp"],
                tis_cap=settings.tis_cap,
            )
            if shard is not None:
                loss = shard.scale(loss, b["mask"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable_parameters(model), settings.max_grad_norm)
            optimizer.step()
            stats.append(s)
    model.eval()
    if shard is not None:
        stats = shard.gather(stats)
    tokens = sum(s.tokens for s in stats) or 1
    return LossStats(
        loss=sum(s.loss * s.tokens for s in stats) / tokens,
        pg_loss=sum(s.pg_loss * s.tokens for s in stats) / tokens,
        kl=sum(s.kl * s.tokens for s in stats) / tokens,
        clip_fraction=sum(s.clip_fraction * s.tokens for s in stats) / tokens,
        ratio_mean=sum(s.ratio_mean * s.tokens for s in stats) / tokens,
        tokens=tokens // max(1, settings.ppo_epochs),
        **sampler_figures(stats),
    )


def sampler_figures(stats: Sequence[LossStats]) -> dict[str, Any]:
    """Sampler-vs-trainer figures of an update, weighted by the tokens that have a sampler log-prob."""
    sampled = sum(s.sampled_tokens for s in stats)
    if not sampled:
        return {}
    return {"sampler_mismatch": sum(s.sampler_mismatch * s.sampled_tokens for s in stats) / sampled,
            "tis_capped_fraction": sum(s.tis_capped_fraction * s.sampled_tokens for s in stats) / sampled,
            "sampled_tokens": sampled}


class LocalTrainer:
    """The policy trained in this process, on this machine's first GPU or the CPU."""

    def __init__(self, settings: RLSettings, tokenizer: Any) -> None:
        self.settings = settings
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.ref_model = None
        if settings.kl_coef > 0:
            # the job's starting policy, frozen (held in bf16 under precision=bf16: no master weights)
            self.ref_model = load_model(settings.policy, self.device, precision=settings.precision,
                                        lora=settings.lora, trainable=False)
        self.model: Any = None
        self.optimizer: Any = None

    def start_stage(self, path: str | Path, *, with_optimizer: bool) -> None:
        """Load the stage's starting weights from disk: exactly what a resumed job or a later job
        would load. AdamW's moments carry over from the stage before (saved beside its weights), so
        a stage boundary is not a cold restart of the optimizer: a fresh one takes its first steps
        at full size on each parameter, a jolt the policy does not need when only the timeout grew."""
        self.model = load_model(path, self.device, precision=self.settings.precision, lora=self.settings.lora,
                                gradient_checkpointing=self.settings.gradient_checkpointing)
        # over the trainable parameters only: the adapter's matrices of a LoRA policy, all of a full one
        self.optimizer = torch.optim.AdamW(trainable_parameters(self.model), lr=self.settings.learning_rate,
                                           weight_decay=0.0)
        if with_optimizer and (Path(path) / OPTIMIZER_FILE).is_file():
            state = torch.load(Path(path) / OPTIMIZER_FILE, map_location=self.device, weights_only=True)
            self.optimizer.load_state_dict(state)

    def update(self, subs: Sequence[SubTrajectory]) -> LossStats | None:
        return train_on_batch(self.model, self.ref_model, self.optimizer, subs, self.settings, self.pad_id)

    def save(self, path: Path) -> None:
        # a LoRA policy saves its adapter folder (base_model_name_or_path: the base it loads on);
        # a full one its fp32 master weights, so a resumed stage continues exactly
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        torch.save(self.optimizer.state_dict(), path / OPTIMIZER_FILE)
