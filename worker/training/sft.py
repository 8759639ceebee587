"""Trajectory-splitting SFT on TRL's SFTTrainer, reporting through a job's Progress.

The examples arrive pre-tokenised with their own labels (-100 = no loss), which SFTTrainer uses
as they are; ``max_length`` is the split's l_max, so TRL's default truncation (1,024) never cuts
a window silently. Cancellation and checkpoints go through a TrainerCallback.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import SFTConfig, SFTTrainer

from apps.trajectories.windows import Example
from worker.training.sharded import Sharding, ShardingError, failure_reason, start_ranks, stop_ranks, torchrun_command
from worker.training.sharded_sft import sft_trainer_args

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class SFTSettings:
    base_model: str
    output_dir: Path
    max_length: int
    method: str = "full"  # or "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    learning_rate: float = 1e-5
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 1
    grad_accum: int = 1
    precision: str = "fp32"  # compute precision: fp32, bf16 (autocast, CPUs too) or fp16 (GPUs only)
    save_steps: int = 50
    logging_steps: int = 1
    seed: int = 0
    # the sharded path (worker/training/sharded_sft.py): ddp / fsdp / zero3 and their options
    strategy: str = "ddp"
    offload: bool = False
    checkpointing: bool = True  # TRL's default: activation checkpointing on
    packing: bool = False
    sequence_parallel: int = 1


class Reporter:
    """What the training loop tells the outside world; the job engine implements it."""

    def metric(self, step: int, **values: float) -> None: ...

    def progress(self, step: int, total: int) -> None: ...

    def saved(self, step: int, path: Path) -> None: ...

    def should_stop(self) -> bool:
        return False


def last_checkpoint(output_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` folder the trainer wrote, to resume from after a crash."""
    checkpoints = [p for p in output_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(checkpoints, key=lambda p: int(p.name.split("-")[-1]), default=None)


def _callback(reporter: Reporter):

    class ProgressCallback(TrainerCallback):
        started = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            values = {k: float(logs[k]) for k in ("loss", "learning_rate", "grad_norm", "epoch") if k in logs}
            if "loss" in values:
                elapsed = max(time.perf_counter() - self.started, 1e-9)
                values["tokens_per_s"] = float(logs.get("num_tokens", 0.0)) / elapsed if "num_tokens" in logs else 0.0
                reporter.metric(state.global_step, **values)

        def on_step_end(self, args, state, control, **kwargs):
            reporter.progress(state.global_step, state.max_steps)
            if reporter.should_stop():
                # Stop at this step boundary and keep what was learnt so far.
                control.should_training_stop = True
                control.should_save = True

        def on_save(self, args, state, control, **kwargs):
            reporter.saved(state.global_step, Path(args.output_dir) / f"checkpoint-{state.global_step}")

    return ProgressCallback()


@dataclass(frozen=True)
class DatasetStats:
    examples: int
    loss_tokens: int
    longest: int


def write_examples(examples: Iterable[Example], path: Path) -> DatasetStats:
    """The examples to a JSON-lines file as they come (a generator stays one: no list of them all)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = loss_tokens = longest = 0
    with open(path, "w") as out:
        for e in examples:
            out.write(json.dumps({"input_ids": e.input_ids, "labels": e.labels}) + "\n")
            count += 1
            loss_tokens += e.loss_tokens
            longest = max(longest, len(e.input_ids))
    return DatasetStats(count, loss_tokens, longest)


def disk_dataset(examples: Iterable[Example], settings: SFTSettings) -> tuple[Dataset, DatasetStats]:
    """The examples as a dataset on disk: written to JSON lines, converted by ``datasets`` to an
    Arrow file it memory-maps, so the trainer reads each batch from disk instead of holding every
    window in RAM (100k windows of 32k tokens are 3 billion token ids). One file per torchrun rank."""
    path, cache = _dataset_files(settings)
    stats = write_examples(examples, path)
    if not stats.examples:
        raise ValueError("No training examples: the selected trajectories have no assistant turns to learn.")
    if stats.longest > settings.max_length:
        raise ValueError(f"An example has {stats.longest} tokens, more than max_length={settings.max_length}.")
    shutil.rmtree(cache, ignore_errors=True)  # a retried job's earlier conversion: superseded
    return Dataset.from_json(str(path), cache_dir=str(cache)), stats


def _dataset_files(settings: SFTSettings) -> tuple[Path, Path]:
    """(the JSON-lines file, the Arrow cache folder) of this torchrun rank's dataset."""
    rank = os.environ.get("RANK", "0")
    folder = settings.output_dir / "dataset"
    return folder / f"examples-rank{rank}.jsonl", folder / f"cache-rank{rank}"


def build_trainer(examples: Iterable[Example], settings: SFTSettings, reporter: Reporter):
    """An SFTTrainer over the examples (read from disk, see ``disk_dataset``), reporting to ``reporter``."""
    return _build_trainer(examples, settings, reporter)[0]


def _build_trainer(examples: Iterable[Example], settings: SFTSettings, reporter: Reporter):
    dataset, stats = disk_dataset(examples, settings)
    cuda = torch.cuda.is_available()
    if settings.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {settings.precision!r}")
    if settings.precision == "fp16" and not cuda:
        raise ValueError("precision fp16 needs a GPU (fp16 autocast with loss scaling); on a CPU choose bf16 or fp32.")
    tokenizer = AutoTokenizer.from_pretrained(settings.base_model)
    # fp32 master weights whatever the checkpoint's dtype (transformers 5 would load a bf16
    # checkpoint as bf16, and AdamW would then round small steps away): the precision is the
    # compute's, by autocast (the Trainer's bf16 / fp16 flags)
    model = AutoModelForCausalLM.from_pretrained(settings.base_model, dtype=torch.float32)
    peft_config = None
    if settings.method == "lora":

        peft_config = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, task_type="CAUSAL_LM",
                                 target_modules="all-linear")
    args = SFTConfig(
        output_dir=str(settings.output_dir),
        max_length=settings.max_length,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        logging_steps=settings.logging_steps,
        save_steps=settings.save_steps,
        save_strategy="steps",
        save_total_limit=2,
        seed=settings.seed,
        report_to=[],
        bf16=settings.precision == "bf16",
        fp16=settings.precision == "fp16",
        use_cpu=not cuda,
        # Inside a Celery prefork worker, subprocesses for data loading are not allowed.
        dataset_num_proc=None,
        dataloader_num_workers=0,
        disable_tqdm=True,
        **sft_trainer_args(
            Sharding(settings.strategy, procs_per_node=int(os.environ.get("WORLD_SIZE", "1")), offload=settings.offload,
                     checkpointing=settings.checkpointing),
            packing=settings.packing, sequence_parallel=settings.sequence_parallel, cuda=cuda),
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
        peft_config=peft_config, callbacks=[_callback(reporter)],
    )
    return trainer, stats


def train_sft(examples: Iterable[Example], settings: SFTSettings, reporter: Reporter) -> dict[str, Any]:
    """Train (or resume) and save the final model to ``output_dir/final``; returns the metrics.

    ``examples`` may be a generator: it is read once, to disk (``disk_dataset``)."""
    trainer, stats = _build_trainer(examples, settings, reporter)
    tokenizer = trainer.processing_class
    resume = last_checkpoint(settings.output_dir)
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    path, cache = _dataset_files(settings)  # trained: the copy on disk has done its work
    path.unlink(missing_ok=True)
    shutil.rmtree(cache, ignore_errors=True)
    final = settings.output_dir / "final"
    trainer.save_model(str(final))
    if trainer.is_world_process_zero():  # under torchrun every rank gets here; one writes
        tokenizer.save_pretrained(str(final))
    return {
        "train_loss": float(output.training_loss),
        "steps": int(trainer.state.global_step),
        "examples": stats.examples,
        "loss_tokens": stats.loss_tokens,
        "resumed_from": resume.name if resume else None,
        "final_path": str(final),
        "precision": settings.precision,
        "method": settings.method,
    }



# The launch folder shared by the engine and the torchrun ranks (worker/training/sft_dist.py).
LAUNCH_FILES = {"settings": "settings.json", "examples": "examples.jsonl", "events": "events.jsonl",
                "stop": "stop", "result": "result.json", "log": "torchrun.log"}


def _forward(event: dict[str, Any], reporter: Reporter) -> None:
    if event["event"] == "metric":
        reporter.metric(event["step"], **event["values"])
    elif event["event"] == "progress":
        reporter.progress(event["step"], event["total"])
    elif event["event"] == "saved":
        reporter.saved(event["step"], Path(event["path"]))


def train_distributed(examples: Sequence[Example], settings: SFTSettings, reporter: Reporter, processes: int,
                      poll_s: float = 0.5, *, sharding: Sharding | None = None,
                      on_started: Callable[[Path], None] | None = None) -> dict[str, Any]:
    """``train_sft`` in ``processes`` ranks started by torchrun, one per GPU (``sharding``: the
    layout over several nodes, each node's worker starting its own ranks at a rendezvous).

    The ranks run in their own process group: whatever ends this call (a finished run, a crash,
    the task's time limit) ends them too. Events written by rank 0 reach ``reporter`` as they
    come; ``reporter.should_stop()`` is relayed to the ranks through the stop file.
    """
    folder = settings.output_dir / "launch"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("events", "stop", "result"):
        (folder / LAUNCH_FILES[name]).unlink(missing_ok=True)
    for old in folder.glob("rank-*.json"):
        old.unlink()
    (folder / LAUNCH_FILES["settings"]).write_text(json.dumps({**asdict(settings), "output_dir": str(settings.output_dir)}))
    with open(folder / LAUNCH_FILES["examples"], "w") as out:
        for example in examples:
            out.write(json.dumps({"window": example.window, "input_ids": example.input_ids,
                                  "labels": example.labels}) + "\n")
    layout = sharding or Sharding(settings.strategy, procs_per_node=processes)
    log_path = folder / LAUNCH_FILES["log"]
    ranks = start_ranks(torchrun_command(layout, "worker.training.sft_dist", folder), log_path)
    offset = 0
    try:
        if on_started is not None:
            on_started(folder)  # e.g. the other nodes' jobs, which join this node's rendezvous
        while True:
            finished = ranks.poll() is not None
            events_path = folder / LAUNCH_FILES["events"]
            if events_path.exists():
                with open(events_path) as events:
                    events.seek(offset)
                    # Only whole lines: rank 0 may be half-way through writing the last one.
                    for line in iter(events.readline, ""):
                        if not line.endswith("\n"):
                            break
                        offset += len(line)
                        _forward(json.loads(line), reporter)
            if finished:
                break
            if reporter.should_stop():
                (folder / LAUNCH_FILES["stop"]).touch()
            time.sleep(poll_s)
    finally:
        stop_ranks(ranks)
    if ranks.returncode != 0:
        raise ShardingError(f"torchrun with {layout.world_size} processes: {failure_reason(log_path, ranks.returncode)}")
    result = json.loads((folder / LAUNCH_FILES["result"]).read_text())
    identities = [json.loads(p.read_text()) for p in folder.glob("rank-*.json")]
    result["ranks"] = sorted(identities, key=lambda r: r["rank"])
    return result
