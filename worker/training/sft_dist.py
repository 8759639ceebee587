"""One rank of a multi-process SFT run, started by torchrun (``python -m torch.distributed.run``).

The job engine writes a launch folder (the pre-tokenised examples and the settings) and starts
one process per GPU through :func:`worker.training.sft.train_distributed`. Every rank builds the
same trainer as the in-process path (accelerate turns it into DistributedDataParallel: NCCL on
GPUs, gloo on CPUs). Rank 0 alone writes what the engine forwards to the job (metrics, progress,
saves) as JSON lines, and the result; the engine asks for a stop by creating a file, and the
ranks agree on it with an all-reduce so they all stop after the same step (a rank that stopped
alone would leave the others waiting in a collective forever).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from apps.trajectories.windows import Example
from worker.training.sft import LAUNCH_FILES, Reporter, SFTSettings, train_sft
from worker.training.sharded import leave_process_group, rank_identity


class FileReporter(Reporter):
    """Rank 0 appends each event as a JSON line; every rank joins the stop vote."""

    def __init__(self, folder: Path, rank: int) -> None:
        self.stop_file = folder / LAUNCH_FILES["stop"]
        self.rank = rank
        self.events = open(folder / LAUNCH_FILES["events"], "a", buffering=1) if rank == 0 else None  # noqa: SIM115

    def _emit(self, event: str, **fields: Any) -> None:
        if self.events is not None:
            self.events.write(json.dumps({"event": event, **fields}) + "\n")

    def metric(self, step: int, **values: float) -> None:
        self._emit("metric", step=step, values=values)

    def progress(self, step: int, total: int) -> None:
        self._emit("progress", step=step, total=total)

    def saved(self, step: int, path: Path) -> None:
        self._emit("saved", step=step, path=str(path))

    def should_stop(self) -> bool:

        wanted = torch.tensor([1 if self.stop_file.exists() else 0])
        if dist.is_available() and dist.is_initialized():
            if dist.get_backend() == "nccl":
                wanted = wanted.cuda()
            dist.all_reduce(wanted, op=dist.ReduceOp.MAX)
        return bool(wanted.item())


def load_launch(folder: Path) -> tuple[list[Example], SFTSettings]:
    spec = json.loads((folder / LAUNCH_FILES["settings"]).read_text())
    spec["output_dir"] = Path(spec["output_dir"])
    with open(folder / LAUNCH_FILES["examples"]) as lines:
        examples = [Example(**json.loads(line)) for line in lines]
    return examples, SFTSettings(**spec)


def main(folder: Path) -> None:
    rank = int(os.environ.get("RANK", "0"))
    examples, settings = load_launch(folder)
    # each rank says who it is, without a collective (accelerate sets the process group up later)
    device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
    (folder / f"rank-{rank}.json").write_text(json.dumps(rank_identity(device)))
    reporter = FileReporter(folder, rank)
    metrics = train_sft(examples, settings, reporter)
    if rank == 0:
        metrics["world_size"] = int(os.environ.get("WORLD_SIZE", "1"))
        (folder / LAUNCH_FILES["result"]).write_text(json.dumps(metrics))
    if reporter.events is not None:
        reporter.events.close()
    leave_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    # Everything is written and the process group is gone: skip the rest of interpreter
    # teardown (C++ static destructors of torch's thread pools are the other source of aborts).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
