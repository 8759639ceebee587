"""One rank of the sharded RL trainer (worker/training/sharded.py), started by torchrun.

Global rank 0 reads each command the job's process writes (``cmd-N.pkl``), broadcasts it to every
rank (over the nodes too), every rank runs it, and rank 0 writes the reply (``reply-N.pkl``).
A rank that raises exits non-zero; torchrun then ends the others and the job's process reports
which rank failed and why.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.elastic.multiprocessing.errors import record
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel

from apps.trajectories.splitting import IGNORE_INDEX
from worker.training.policy_io import trainable_parameters
from worker.training.rl_math import LossStats, decoder_and_head
from worker.training.rl_update import load_model, train_on_batch
from worker.training.sharded import RANK_FILES, SHARDED_DIR, Sharding, leave_process_group, rank_identity, write_atomic

if TYPE_CHECKING:
    from worker.training.rl import RLSettings, SubTrajectory


def part_bounds(rows: int, rank: int, world: int) -> tuple[int, int]:
    """Rows [lo, hi) of a minibatch of ``rows`` that ``rank`` trains: contiguous, sizes differing by one at most."""
    base, extra = divmod(rows, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


class RankShard:
    """``rl_update.Shard`` for this rank: its rows, its loss weight, everyone's stats."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()

    def part(self, group: Sequence[SubTrajectory]) -> Sequence[SubTrajectory]:
        lo, hi = part_bounds(len(group), self.rank, self.world)
        if hi > lo:
            return list(group[lo:hi])
        # More ranks than rows: this rank still runs every forward and backward the others do
        # (FSDP gathers parameters in them), on a row that carries no loss token.
        first = group[0]
        example = replace(first.example, labels=[IGNORE_INDEX] * len(first.example.labels))
        return [replace(first, example=example)]

    def scale(self, loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # clipped_pg_loss is the mean over this part's tokens; the 1-rank loss is the mean over the
        # minibatch's. DDP and FSDP average gradients over the ranks, hence the factor world.
        tokens = mask.sum()
        total = tokens.clone()
        dist.all_reduce(total)
        return loss * (self.world * tokens / total.clamp(min=1))

    def gather(self, stats: list[LossStats]) -> list[LossStats]:
        everyone: list[Any] = [None] * self.world
        dist.all_gather_object(everyone, stats)
        return [s for part in everyone for s in part]


def wrap(model: Any, sharding: Sharding, device: torch.device, precision: str, *, sliced: bool = False) -> Any:
    """The model as this strategy trains it: DDP (a full copy per rank) or FSDP2 (one unit per
    decoder layer, as transformers' ``_no_split_modules`` names them, and the root). The loader
    (``rl_update.load_model``) already made the master weights fp32 and set checkpointing up."""
    if sharding.strategy == "ddp":
        model.to(device)
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    bf16 = precision == "bf16" and device.type == "cuda"
    options = {
        # parameters stay fp32 (the master weights AdamW updates); compute in bf16, reduce in fp32
        "mp_policy": MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16
        else MixedPrecisionPolicy(),
        "offload_policy": CPUOffloadPolicy() if sharding.offload else OffloadPolicy(),
    }
    units = set(getattr(model, "_no_split_modules", None) or ())
    for module in list(model.modules()):
        if type(module).__name__ in units:
            fully_shard(module, **options)
    # ``sliced``: token_logprobs calls the body and the head apart (log-probs in slices, never the
    # whole logits); each is then a unit of its own that gathers its weights when called, the head
    # once for all its slices (``wrap_for_logprobs`` decides).
    if sliced:
        body, head = decoder_and_head(model)
        fully_shard(body, **options)
        fully_shard(head, reshard_after_forward=False, **options)
    fully_shard(model, **options)
    return model


def sliced_logprobs(model: Any) -> bool:
    """Whether token_logprobs may call this model's body and head apart under FSDP2: an untied head."""
    parts = decoder_and_head(model)
    return parts is not None and not any(p is q for p in parts[1].parameters() for q in parts[0].parameters())


class RootForward(torch.nn.Module):
    """The FSDP model seen through its root forward only (no ``config``: token_logprobs then takes
    the model's own forward, which gathers the root's weights, instead of its body and head)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.inner = model

    def forward(self, **inputs: Any) -> Any:
        return self.inner(**inputs)


def wrap_for_logprobs(model: Any, sharding: Sharding, device: torch.device, precision: str, *,
                      kl: bool = False) -> tuple[Any, Any]:
    """(the wrapped policy, what train_on_batch scores it with).

    DDP: the model itself (its forward; whole logits). FSDP2: in slices, body and head apart,
    where the head is the model's own (untied, as 7B and larger) and there is no KL term; else the
    root forward with whole logits. A head tied to the embeddings cannot be a unit apart (one
    weight, two units); with a KL term the sliced policy drifted 3.6e-5 from 1 rank in 3 updates
    on the tiny model where every other layout stays under 1e-5 (not understood yet: measured).
    """
    sliced = sharding.strategy == "fsdp" and not kl and sliced_logprobs(model)
    wrapped = wrap(model, sharding, device, precision, sliced=sliced)
    return wrapped, RootForward(wrapped) if sharding.strategy == "fsdp" and not sliced else wrapped


def unwrapped(model: Any) -> Any:
    return model.module if isinstance(model, DistributedDataParallel) else model


def full_weights(model: Any) -> dict[str, torch.Tensor]:
    """The whole model's weights on rank 0's CPU (empty on the others); a collective: every rank calls it."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


class RankTrainer:
    def __init__(self, folder: Path, settings: RLSettings, sharding: Sharding, pad_id: int,
                 device: torch.device) -> None:
        self.folder = folder
        self.settings = settings
        self.sharding = sharding
        self.pad_id = pad_id
        self.device = device
        self.rank = dist.get_rank()
        self.shard = RankShard(device)
        self.model: Any = None
        self.scorer: Any = None  # the model as train_on_batch scores with it (``wrap_for_logprobs``)
        self.optimizer: Any = None
        self.ref_model: Any = None
        if settings.kl_coef > 0:
            # the job's starting policy, frozen, as LocalTrainer holds it: a whole copy on every rank
            # (bf16 under precision=bf16). Sharded with FSDP2 beside the policy, an untied model's
            # run drifted 6e-5 from 1 rank in 3 updates on the tiny model (a tied one stayed under
            # 1e-5): until that is understood, the reference is not sharded.
            self.ref_model = load_model(settings.policy, device, precision=settings.precision, lora=settings.lora,
                                        trainable=False)

    def start(self, path: str, with_optimizer: bool) -> None:
        # Every strategy starts from the plain HF weights; a sharded checkpoint beside them (this
        # job's stage) brings back the exact model and optimizer state, whatever the rank count.
        self.model = self.scorer = self.optimizer = None  # the last stage's shards go before the next stage's
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        settings = self.settings
        policy = load_model(path, "cpu", precision=settings.precision, lora=settings.lora,
                            gradient_checkpointing=settings.gradient_checkpointing)
        self.model, self.scorer = wrap_for_logprobs(policy, self.sharding, self.device, settings.precision,
                                                    kl=settings.kl_coef > 0)
        # over the trainable parameters only (a LoRA policy's adapter), as LocalTrainer
        self.optimizer = torch.optim.AdamW(trainable_parameters(self.model), lr=settings.learning_rate,
                                           weight_decay=0.0)
        sharded = Path(path) / SHARDED_DIR
        if with_optimizer and sharded.is_dir():
            model_state, optim_state = get_state_dict(self.model, self.optimizer)
            state = {"model": model_state, "optim": optim_state}
            dcp.load(state, checkpoint_id=str(sharded))
            set_state_dict(self.model, self.optimizer, model_state_dict=state["model"],
                           optim_state_dict=state["optim"])

    def update(self, subs: list[SubTrajectory]) -> dict[str, Any]:
        # train_on_batch runs its forwards under the settings' autocast, as on one device
        stats = train_on_batch(self.scorer, self.ref_model, self.optimizer, subs, self.settings, self.pad_id,
                               shard=self.shard)
        weights = full_weights(self.model)
        path = self.folder / RANK_FILES["weights"]
        if self.rank == 0:
            torch.save(weights, path)
        return {"stats": stats, "weights": str(path)}

    def save(self, path: str) -> None:
        folder = Path(path)
        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(folder / SHARDED_DIR))
        weights = full_weights(self.model)
        if self.rank == 0:
            unwrapped(self.model).save_pretrained(folder, state_dict=weights)
        dist.barrier()

    def ranks(self) -> list[dict[str, Any]]:
        everyone: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, rank_identity(self.device))
        return everyone


def next_command(folder: Path, number: int, driver_pid: int, poll_s: float = 0.02) -> tuple[str, dict[str, Any]]:
    """Rank 0 waits for command ``number``; if the job's process is gone, the ranks stop."""
    path = folder / f"cmd-{number}.pkl"
    while not path.exists():
        try:
            os.kill(driver_pid, 0)
        except ProcessLookupError:
            return "stop", {}
        time.sleep(poll_s)
    with open(path, "rb") as f:
        return pickle.load(f)  # noqa: S301 (written by the job's own process)


def main(folder: Path) -> None:
    with open(folder / RANK_FILES["spec"], "rb") as f:
        spec = pickle.load(f)  # noqa: S301 (written by the job's own process)
    settings, sharding = spec["settings"], spec["sharding"]
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    # Between two commands the ranks wait in a broadcast while the job rolls out and judges: a
    # stage's timeout, hours. The collective's timeout must outlast it.
    longest = max((stage.timeout_s for stage in settings.stages), default=3600.0)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=2 * longest + 3600))
    torch.manual_seed(settings.seed)
    trainer = RankTrainer(folder, settings, sharding, spec["pad_id"], device)
    number = 0
    while True:
        command = [next_command(folder, number, spec["driver_pid"]) if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(command, src=0)
        op, args = command[0]
        if op == "stop":
            break
        reply = getattr(trainer, op)(**args)
        if dist.get_rank() == 0:
            write_atomic(folder / f"reply-{number}.pkl", reply)
        number += 1
    leave_process_group()


if __name__ == "__main__":
    try:
        # record: torchrun's failure summary then carries this rank's exception, not just its exit code
        record(main)(Path(sys.argv[1]))
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)  # now: a gloo process group torn down by the interpreter would abort (SIGABRT) instead
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # as sft_dist: skip interpreter teardown of torch's thread pools
