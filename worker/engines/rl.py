"""The progressive-RL job (kind ``rl``): builds tasks, runner, judge and policy serving from the
config, runs ``worker.training.rl.train_rl`` and records a checkpoint at every stage boundary."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from django.conf import settings

from apps.jobs.forms_rl import parse_stages
from apps.jobs.models import Job, ModelCheckpoint
from apps.jobs.progress import JobCancelled, Progress
from apps.judging.llm.client import make_client
from apps.judging.models import ModelEndpoint
from apps.papers.models import Paper
from apps.trajectories.splitting import SplitConfig
from worker.engines.ranks import start_other_nodes, stop_other_nodes
from worker.training.rl import Reporter, RLError, RLSettings, RLStopped, Stage, Task, train_rl
from worker.training.rl_agent import AgentRunner, PaperTask, QueueJudge
from worker.training.rl_drivers import DriverError, DriverGroup
from worker.training.rl_eval import Evaluation, eval_tasks_from
from worker.training.rl_policy_server import PolicyServer
from worker.training.rl_serving import RemotePolicy, ServerConfig
from worker.training.rl_toy import ModelJudge, ToyJudge, ToyRunner, toy_tasks
from worker.training.sharded import ShardedTrainer, describe_ranks, job_sharding, training_processes, visible_gpus


class JobReporter(Reporter):
    def __init__(self, job: Job, progress: Progress, total: int) -> None:
        self.job = job
        self.progress_ = progress
        self.total = total
        self.cancelled = False
        progress.set_total(total, stage="rl")

    def metric(self, step: int, **values: float) -> None:
        self.progress_.metric(step, **values)

    def progress(self, done: int, total: int, message: str) -> None:
        try:
            self.progress_.update(done / total if total else 0.0, message, step=done, force=True)
        except JobCancelled:
            self.cancelled = True

    def log(self, text: str) -> None:
        self.progress_.log(text)

    def stage_done(self, stage: int, path: Path, info: dict[str, Any]) -> None:
        config = self.job.config
        relative = str(Path(path).resolve().relative_to(Path(settings.DATA_DIR).resolve()))
        checkpoint = ModelCheckpoint.objects.create(
            job=self.job, name=f"{self.job.title} #{self.job.pk} stage {stage}", path=relative,
            base_model=info["start_from"], method="rl", config={**config, "stage": stage},
            metrics={k: v for k, v in info.items() if k != "start_from"},
        )
        self.progress_.checkpoint({"step": info["last_step"], "stage": stage, "path": str(path),
                                   "model_checkpoint": checkpoint.pk})
        self.progress_.artifact(f"stage {stage} policy", relative, kind="checkpoint", checkpoint=checkpoint.pk)
        self.progress_.log(f"stage {stage} done: checkpoint #{checkpoint.pk} at {relative}")

    def should_stop(self) -> bool:
        if not self.cancelled:
            try:
                self.progress_.check_cancelled()
            except JobCancelled:
                self.cancelled = True
        return self.cancelled


def policy_folder(config: dict[str, Any]) -> str:
    if config.get("policy_checkpoint"):
        checkpoint = ModelCheckpoint.objects.get(pk=int(config["policy_checkpoint"]))
        return str(Path(settings.DATA_DIR) / checkpoint.path)
    return str(config["policy_model"])


def paper_tasks(config: dict[str, Any]) -> list[Task]:
    tasks = []
    for paper in Paper.objects.filter(pk__in=[int(p) for p in config.get("papers", [])]).order_by("pk"):
        version = paper.rubric_versions.order_by("-number").first()
        if version is None:
            raise RLError(f"paper {paper.slug} has no rubric version to judge against")
        blacklist = [str(url) for url in paper.blacklist or []]
        tasks.append(Task(paper.slug, PaperTask(
            paper.pk, paper.slug, paper.markdown, addendum=paper.addendum, blacklist=blacklist,
            image=config.get("sandbox_image", ""), rubric_version=version.pk,
        )))
    return tasks


def reproduce_options(config: dict[str, Any]) -> dict[str, Any] | None:
    """The judge jobs' reproduction step (reproduce.sh in a fresh sandbox before grading), in the
    RL job's own sandbox settings; None when the job does not ask for it."""
    if not config.get("reproduce"):
        return None
    return {"reproduce_timeout": int(config.get("reproduce_timeout", 3600)),
            "reproduce_backend": config.get("sandbox_backend", "auto"), "reproduce_image": config.get("sandbox_image", ""),
            "reproduce_gpus": int(config.get("reproduce_gpus", 0))}


def eval_setup(job: Job, config: dict[str, Any], runner: Any, judge: Any) -> Evaluation:
    """The eval tasks (eval-split papers, or toy tasks of their own), rolled out and judged as training is."""
    n = int(config.get("eval_rollouts", 1))
    seed = int(config.get("seed", 0))
    if config.get("task_source") == "toy":
        return Evaluation(eval_tasks_from(toy_tasks(int(config.get("toy_eval_tasks", 1)))), runner, judge, n, seed)
    # Its own runner: eval submissions and trajectories are named apart from the training ones.
    eval_runner = AgentRunner(Path(settings.DATA_DIR), job_id=job.pk, sandbox_backend=runner.sandbox_backend,
                              image=runner.image, l_max=runner.l_max, should_stop=runner.should_stop)
    eval_runner.run_id += "-eval"
    return Evaluation(paper_tasks({**config, "papers": config.get("eval_papers", [])}), eval_runner, judge, n, seed)


def run(job: Job, progress: Progress) -> dict[str, Any]:
    config = job.config
    stages = tuple(Stage(t, n) for t, n in parse_stages(config["stages"]))
    output_dir = Path(settings.DATA_DIR) / "checkpoints" / f"job-{job.pk}"
    rl_settings = RLSettings(
        policy=policy_folder(config), output_dir=output_dir, stages=stages,
        n_rollouts=int(config.get("n_rollouts", 4)),
        split=SplitConfig(l_max=int(config.get("l_max", 32768)), overlap_turns=int(config.get("overlap_turns", 2))),
        clip_eps=float(config.get("clip_eps", 0.2)), kl_coef=float(config.get("kl_coef", 0.0)),
        learning_rate=float(config.get("learning_rate", 1e-6)), ppo_epochs=int(config.get("ppo_epochs", 1)),
        minibatch_size=int(config.get("minibatch_size", 8)),
        partial_rollouts=bool(config.get("partial_rollouts", True)),
        max_staleness=int(config.get("max_staleness", 1)), seed=int(config.get("seed", 0)),
        tis_cap=float(config.get("tis_cap", 2.0)), concurrency=int(config.get("rollout_concurrency", 8)),
        sandbox_hosts=tuple(h.strip() for h in str(config.get("sandbox_hosts") or "").split(",") if h.strip()) or ("",),
        sandboxes_per_host=int(getattr(settings, "KLONG_SANDBOXES_PER_HOST", 0) or 0),
        precision=config.get("precision", "bf16"), lora=config.get("lora_mode", "train"),
        gradient_checkpointing=bool(config.get("gradient_checkpointing", True)),
        packing=bool(config.get("packing", True)),
        eval_every=int(config.get("eval_every", 0)),
    )
    reporter = JobReporter(job, progress, sum(s.iterations for s in stages))
    make_policy = None
    # the ranks the update trains on (None: this process), decided before anything is started
    processes = training_processes(int(config.get("gpus", 0)), visible_gpus(), settings.KLONG_SFT_CPU_PROCESSES)
    sharding = job_sharding(config, processes, rdzv_id=f"job-{job.pk}-{job.attempt}")
    stack = contextlib.ExitStack()
    if config.get("task_source") == "toy":
        tasks, runner, judge = toy_tasks(int(config.get("toy_tasks", 2))), ToyRunner(), ToyJudge()
        if config.get("judge_endpoint"):
            # a model judge instead of the programmatic checks: PaperBench's protocol on the toy text

            endpoint = ModelEndpoint.objects.get(name=config["judge_endpoint"]).to_config()
            judge = ModelJudge(make_client(endpoint), concurrency=endpoint.concurrency)
    else:
        tasks = paper_tasks(config)
        runner = AgentRunner(Path(settings.DATA_DIR), job_id=job.pk, sandbox_backend=config.get("sandbox_backend", "auto"),
                             image=config.get("sandbox_image", ""), l_max=rl_settings.split.l_max,
                             should_stop=reporter.should_stop)
        judge = QueueJudge(config["judge_endpoint"], user=job.created_by, should_stop=reporter.should_stop,
                           reproduce=reproduce_options(config))
        if config.get("policy_server_url"):
            server = ServerConfig(base_url=config["policy_server_url"], model=Path(rl_settings.policy).name,
                                  reload=config.get("policy_server_reload", "sglang"),
                                  model_path=str(config.get("policy_server_model_path") or ""))
        elif not (Path(rl_settings.policy) / "adapter_config.json").is_file():
            # a small policy served by this worker over the same API: the pool's concurrent calls
            # are batched, and every answer carries its token ids and log-probs (a LoRA policy
            # generates on the worker's own copy instead: the server loads whole models)
            local = stack.enter_context(PolicyServer(rl_settings.policy))
            server = ServerConfig(base_url=local.base_url, model="policy", reload="sglang")
        else:
            server = None

        if server is not None:
            def make_policy(model, tokenizer, version):
                return RemotePolicy(server, output_dir / "served", tokenizer, version)

    make_drivers = None
    drivers = int(config.get("rollout_processes") or 1)
    if drivers > 1:
        progress.log(f"The rollouts run in {drivers} driver processes")

        def make_drivers(tasks, runner, policy, states):
            try:
                return DriverGroup(drivers, rl_settings.concurrency, tasks, runner, policy, states)
            except DriverError as exc:
                raise RLError(str(exc)) from None

    evaluation = None
    if rl_settings.eval_every:
        evaluation = eval_setup(job, config, runner, judge)

    # A retried job resumes after its last finished stage, from that stage's checkpoint.
    done = job.checkpoint or {}
    start_stage = int(done.get("stage", 0)) + 1
    if start_stage > len(stages):
        stack.close()
        return {"stages": [], "note": "every stage had finished before this attempt"}
    if start_stage > 1:
        progress.log(f"resuming at stage {start_stage} from {done['path']}")
    trainers: list[ShardedTrainer] = []
    ranks: list[dict[str, Any]] = []
    other_nodes: list[Job] = []

    def make_trainer(train_settings: RLSettings, tokenizer: Any) -> ShardedTrainer:
        trainer = ShardedTrainer(train_settings, tokenizer, sharding)
        trainers.append(trainer)
        if sharding.nodes > 1:  # node 0's ranks wait at the rendezvous for the other nodes' workers
            other_nodes.extend(start_other_nodes(job, sharding, trainer.rank_module))
        ranks[:] = trainer.ranks()
        progress.log("The update trains on " + describe_ranks(ranks, sharding.strategy))
        return trainer

    try:
        result = train_rl(rl_settings, tasks, runner, judge, reporter, make_policy=make_policy,
                          start_stage=start_stage, start_from=done.get("path"), evaluation=evaluation,
                          make_trainer=make_trainer if sharding else None, make_drivers=make_drivers)
    except RLStopped:
        raise JobCancelled() from None
    finally:
        for trainer in trainers:
            trainer.close()
        stop_other_nodes(other_nodes)
        stack.close()
    if reporter.cancelled:
        raise JobCancelled()
    if evaluation is not None:
        result["evaluations"] = evaluation.history
    result["checkpoints"] = list(ModelCheckpoint.objects.filter(job=job).order_by("pk").values_list("pk", flat=True))
    if ranks:
        result["ranks"] = ranks  # every rank: global number, host, pid, device
    return result
