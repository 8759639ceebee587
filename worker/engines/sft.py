"""The SFT job: select trajectories, split them with the base model's tokenizer, train, record lineage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from transformers import AutoTokenizer

from apps.jobs.models import Job, ModelCheckpoint
from apps.jobs.progress import JobCancelled, Progress
from apps.ops.artifacts import publish_artifact
from apps.papers.models import Paper
from apps.trajectories.chat_native import renderer_for
from apps.trajectories.models import Trajectory
from apps.trajectories.queries import filter_trajectories
from apps.trajectories.split_service import config_from, declared_tools, keeps_reasoning, reasoning_choice, turn_rows
from apps.trajectories.windows import Example, TemplateError, dataset_hash, split_examples
from worker.engines.ranks import start_other_nodes, stop_other_nodes
from worker.training.sft import Reporter, SFTSettings, train_distributed, train_sft
from worker.training.sharded import describe_ranks, job_sharding, training_processes, visible_gpus

SPLIT_OPTIONS = ("l_max", "overlap_turns", "train_overlap_once")


class JobReporter(Reporter):
    """Training events into the job: metric points, progress, checkpoints, and the cancel button."""

    def __init__(self, job_progress: Progress) -> None:
        self.job_progress = job_progress
        self.cancelled = False

    def metric(self, step: int, **values: float) -> None:
        self.job_progress.metric(step, **values)

    def progress(self, step: int, total: int) -> None:
        try:
            self.job_progress.update(step / total if total else 0.0, f"step {step} of {total}", step=step)
        except JobCancelled:
            # Not from inside the trainer: should_stop() makes it stop at this step and save.
            self.cancelled = True

    def saved(self, step: int, path: Path) -> None:
        self.job_progress.checkpoint({"step": step, "path": str(path)})
        self.job_progress.log(f"Checkpoint at step {step}: {path.name}")

    def should_stop(self) -> bool:
        try:
            self.job_progress.check_cancelled()
        except JobCancelled:
            self.cancelled = True
        return self.cancelled


def select_trajectories(config: dict[str, Any]):
    """A named dataset's trajectories, or the given ids, else accepted trajectories matching paper /
    source / minimum score (the list page's filters). Rejected trajectories are never trained on,
    however they were chosen."""

    chosen = Trajectory.objects.exclude(review=Trajectory.Review.REJECTED)
    if config.get("dataset"):
        return chosen.filter(datasets__name=config["dataset"]).order_by("pk")
    if config.get("ids"):
        return chosen.filter(pk__in=[int(i) for i in str(config["ids"]).split(",") if i]).order_by("pk")
    paper = None
    if config.get("paper"):
        paper = Paper.objects.filter(slug=config["paper"]).first()
        if paper is None:
            return chosen.none()
    values = {"paper": paper, "source": config.get("source"), "score_min": config.get("min_score"),
              "review": Trajectory.Review.ACCEPTED}
    return filter_trajectories(chosen, values)


def build_examples(config: dict[str, Any], tokenizer) -> tuple[list[Example], list[str], list[int]]:
    """Examples of every selected trajectory, with their manifests' hashes and the trajectory ids.

    Each window is rendered once in the base model's chat format (mistral-common, harmony or its
    Jinja template); a trajectory that format cannot render faithfully fails the job with the reason.
    """
    hashes: list[str] = []
    ids: list[int] = []
    examples = list(iter_examples(config, tokenizer, hashes, ids))
    return examples, hashes, ids


def iter_examples(config: dict[str, Any], tokenizer, hashes: list[str], ids: list[int]) -> Iterator[Example]:
    """``build_examples`` one trajectory at a time, for training to write to disk as they come:
    ``hashes`` and ``ids`` fill as it runs. The chat format is checked at once, before the first."""

    renderer = renderer_for(tokenizer, config["base_model"])  # TemplateError (a ValueError) fails the job
    reasoning = keeps_reasoning(reasoning_choice(config), renderer)
    split_params = {name: config[name] for name in SPLIT_OPTIONS if name in config}

    def examples() -> Iterator[Example]:
        for trajectory in select_trajectories(config).iterator():
            rows = turn_rows(trajectory, reasoning=reasoning)
            if not rows:
                continue
            try:
                manifest, windows = split_examples(rows, config_from(split_params, trajectory), renderer,
                                                   declared_tools(trajectory))
            except TemplateError as exc:
                raise ValueError(f"Trajectory {trajectory.pk}: {exc}") from exc
            yield from windows
            hashes.append(manifest.content_hash)
            ids.append(trajectory.pk)

    return examples()


def run(job: Job, progress: Progress) -> dict[str, Any]:

    config = job.config
    tokenizer = AutoTokenizer.from_pretrained(config["base_model"])
    progress.update(0.0, "splitting trajectories", force=True)
    manifest_hashes: list[str] = []
    trajectory_ids: list[int] = []
    # split as the trainer writes them to disk: never every window of the dataset in memory at once
    examples = iter_examples(config, tokenizer, manifest_hashes, trajectory_ids)
    output_dir = settings.DATA_DIR / "checkpoints" / f"job-{job.pk}"
    train_settings = SFTSettings(
        base_model=config["base_model"],
        output_dir=output_dir,
        max_length=int(config["l_max"]),
        method=config.get("method", "full"),
        lora_r=int(config.get("lora_r", 16)),
        learning_rate=float(config.get("learning_rate", 1e-5)),
        epochs=float(config.get("epochs", 1)),
        max_steps=int(config.get("max_steps", -1)),
        batch_size=int(config.get("batch_size", 1)),
        grad_accum=int(config.get("grad_accum", 1)),
        precision=config.get("precision", "fp32"),
        save_steps=int(config.get("save_steps", 50)),
        strategy=config.get("strategy", "ddp"),
        offload=bool(config.get("offload", False)),
        checkpointing=bool(config.get("checkpointing", True)),
        packing=bool(config.get("packing", False)),
        sequence_parallel=int(config.get("sequence_parallel", 1)),
    )
    reporter = JobReporter(progress)
    processes = training_processes(int(config.get("gpus", 1)), visible_gpus(), settings.KLONG_SFT_CPU_PROCESSES)
    sharding = job_sharding(config, processes, rdzv_id=f"job-{job.pk}-{job.attempt}")
    if sharding is not None:
        progress.log(f"Launching {sharding.world_size} ranks ({sharding.strategy}) with torchrun"
                     + (f" on {sharding.nodes} nodes, rendezvous {sharding.rdzv_endpoint}" if sharding.nodes > 1 else ""))
        other_nodes: list[Job] = []

        def started(folder: Path) -> None:
            if sharding.nodes > 1:
                other_nodes.extend(start_other_nodes(job, sharding, "worker.training.sft_dist"))

        try:
            metrics = train_distributed(examples, train_settings, reporter, processes, sharding=sharding,
                                        on_started=started)
        finally:
            stop_other_nodes(other_nodes)
        progress.log("Trained on " + describe_ranks(metrics["ranks"], sharding.strategy))
    else:
        metrics = train_sft(examples, train_settings, reporter)
    progress.log(f"{len(trajectory_ids)} trajectories split into {metrics['examples']} windows "
                 f"({metrics['loss_tokens']} loss tokens)")
    if reporter.cancelled:
        raise JobCancelled()
    data_hash = dataset_hash(manifest_hashes, tokenizer.name_or_path)
    checkpoint = ModelCheckpoint.objects.create(
        job=job, name=f"{job.title} #{job.pk}", path=str(Path(metrics["final_path"]).relative_to(settings.DATA_DIR)),
        base_model=config["base_model"], method=train_settings.method, dataset_hash=data_hash,
        manifest_hashes=manifest_hashes, trajectory_ids=trajectory_ids, config=config, metrics=metrics,
    )
    progress.artifact("model", checkpoint.path, kind="checkpoint", checkpoint=checkpoint.pk)
    publish_artifact(Path(metrics["final_path"]))  # for the web servers and other workers (KLONG_STORAGE=s3)
    return {**metrics, "checkpoint": checkpoint.pk, "dataset_hash": data_hash, "trajectories": len(trajectory_ids)}
