"""KLong's progressive RL: staged rollouts, sub-trajectory rewards, group-relative advantages.

Stages m = 1..M with growing timeouts T(m). Each iteration of stage m:
1. n rollouts per task with the current policy, cut at T(m) (a cut rollout is kept: truncated);
2. each rollout split into sub-trajectories with the SFT splitter (``split_examples`` on
   ``apps.trajectories.splitting.plan_split``; same windows, same loss masks);
3. Q(m,i,j) = the judge's rubric score of the submission state at the end of sub-trajectory i;
4. A(m,i,j) = Q(m,i,j) - mean over the task's sub-trajectories (``rl_math.task_advantages``);
5. a clipped policy-gradient update on each sub-trajectory's assistant tokens with its A,
   optionally with a KL penalty to the frozen reference (the job's starting policy).
At the end of a stage the policy is saved (a checkpoint, with the optimizer state) and the next
stage starts from that folder with the longer timeout.

Why a loop of our own rather than TRL's GRPOTrainer (with an external ``rollout_func``): the
trainer's group is "one prompt, num_generations completions" and its advantage is computed per
completion from reward functions, then normalised by the group's std. KLong's group is the n x K
sub-trajectories of one task, each with its *own* input (pinned prefix + truncated history +
its turns), and its advantage is Q minus the group mean, unscaled. Feeding that through
GRPOTrainer would mean overriding its advantage computation and batching, i.e. most of it; the
update itself is 40 lines of torch (``rl_update.train_on_batch``), readable and exactly the spec.

Rollouts run in a pool (``rl_pool.RolloutPool``): up to ``concurrency`` agent sessions at once,
each in its own sandbox. With ``partial_rollouts`` the pool never stops: an iteration takes the
first n finished rollouts of each task, and unfinished ones go on through the update and continue
with the new policy; each assistant turn records the policy version that generated it (a
rollout's *segments*), and the update corrects for the sampler, older versions included, by
truncated importance sampling on the sampler's own log-probs (token-in/token-out,
``rl_update.train_on_batch``). Staleness is bounded at launch by ``max_staleness``.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from transformers import AutoTokenizer

from apps.trajectories.chat_native import renderer_for
from apps.trajectories.splitting import SplitConfig
from apps.trajectories.windows import ChatRenderer, Example, TurnRow, split_examples
from worker.training.policy_io import is_lora
from worker.training.rl_math import LossStats, advantage_spread, batch_advantages
from worker.training.rl_pool import RolloutPool, RolloutStates, current_session
from worker.training.rl_update import LocalTrainer

HOUR = 3600.0
DEFAULT_STAGES = ((2 * HOUR, 10), (4 * HOUR, 10), (6 * HOUR, 10))


class RLError(RuntimeError):
    """The run cannot go on (no rollouts judged, a task without a rubric, ...): the job fails with it."""


class RLStopped(Exception):
    """The reporter asked to stop (the cancel button)."""


@dataclass(frozen=True, slots=True)
class Stage:
    timeout_s: float
    iterations: int

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.iterations < 1:
            raise ValueError(f"a stage needs a positive timeout and at least one iteration, got {self}")


def check_stages(stages: Sequence[Stage]) -> None:
    """T(1) < T(2) < ... < T(M): the timeouts must grow (that is what makes it progressive)."""
    if not stages:
        raise ValueError("at least one stage is needed")
    for a, b in zip(stages, stages[1:], strict=False):
        if b.timeout_s <= a.timeout_s:
            raise ValueError(f"stage timeouts must grow: {a.timeout_s:g} s is followed by {b.timeout_s:g} s")


@dataclass(frozen=True)
class RLSettings:
    policy: str  # model folder the run starts from (also the KL reference)
    output_dir: Path
    stages: tuple[Stage, ...]
    n_rollouts: int = 4
    split: SplitConfig = field(default_factory=SplitConfig)
    clip_eps: float = 0.2
    kl_coef: float = 0.0
    learning_rate: float = 1e-6
    ppo_epochs: int = 1
    minibatch_size: int = 8  # sub-trajectories per optimiser step
    max_grad_norm: float = 1.0
    tis_cap: float = 2.0  # truncated importance sampling: cap of pi_old / pi_sampler per token
    partial_rollouts: bool = True
    max_staleness: int = 1
    seed: int = 0
    concurrency: int = 8  # agent sessions at once (the rollout pool)
    sandbox_hosts: tuple[str, ...] = ("",)  # Docker hosts the sessions spread over ("" = DOCKER_HOST)
    sandboxes_per_host: int = 0  # at most this many sessions per host (KLONG_SANDBOXES_PER_HOST); 0 = no cap
    precision: str = "bf16"  # compute precision (bf16 autocast); the weights are fp32 masters either way
    lora: str = "train"  # a LoRA policy trains as LoRA, or "merge": merged into its base, all weights
    gradient_checkpointing: bool = True  # recompute activations in the backward: long windows fit
    packing: bool = True  # padding-free minibatches: the windows end to end in one row (rl_update)
    eval_every: int = 0  # evaluate the eval tasks every k iterations (worker/training/rl_eval.py); 0 = never


@dataclass
class Task:
    """One task (a paper with its rubric, or a toy task); ``data`` is what its runner needs."""

    id: str
    data: Any = None


@dataclass
class Rollout:
    """One episode of the policy on a task, cut at the stage timeout if it got there.

    ``states[t]`` is the submission state after turn t (a commit id, or the toy's text): what
    the judge scores at the end of a sub-trajectory. ``elapsed_s`` is the agent's time (wall
    clock for real agents, the toy's simulated clock); ``wall_s`` the real seconds it took.
    """

    task_id: str
    index: int
    policy_version: int
    timeout_s: float
    turns: list[TurnRow]
    states: list[Any]
    end_state: str  # submitted | timed_out | step_limit | error | cancelled
    elapsed_s: float
    wall_s: float = 0.0
    tokens: int = 0  # assistant tokens generated
    meta: dict[str, Any] = field(default_factory=dict)
    # (first turn, policy version) of each segment: the turns one policy version generated. A
    # partial rollout continued across updates has several; ``policy_version`` is the first's.
    segments: list[tuple[int, int]] = field(default_factory=list)

    @property
    def truncated(self) -> bool:
        return self.end_state == "timed_out"


def segments_of(turn_versions: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Segments from (turn index, policy version) of each generated turn: a new one where the version changes."""
    segments: list[tuple[int, int]] = []
    for turn, version in turn_versions:
        if not segments or segments[-1][1] != version:
            segments.append((turn, version))
    return segments


class Policy(Protocol):
    """What a rollout runner generates with; ``version`` counts the updates published so far."""

    version: int

    def publish(self, model: Any, version: int) -> None:
        """The weight-reload hook: make the rollouts from now on use ``model`` (version ``version``)."""


class RolloutRunner(Protocol):
    def run(self, task: Task, index: int, timeout_s: float, policy: Any, seed: int) -> Rollout: ...


class Judge(Protocol):
    def score(self, requests: Sequence[tuple[Task, Any]]) -> list[float]:
        """Q for each (task, submission state): the rubric score in [0, 1]."""

    def queue_depth(self) -> int:
        """Judge requests waiting (the priority queue's depth): shown live on the job page."""


class Reporter:
    """What the loop tells the outside world; the job engine implements it (tests record it)."""

    def metric(self, step: int, **values: float) -> None: ...

    def progress(self, done: int, total: int, message: str) -> None: ...

    def log(self, text: str) -> None: ...

    def stage_done(self, stage: int, path: Path, info: dict[str, Any]) -> None: ...

    def should_stop(self) -> bool:
        return False


# --------------------------------------------------------------------------- sub-trajectories


@dataclass
class SubTrajectory:
    """Window i of rollout j: its training example (None without loss turns) and end state."""

    task_id: str
    rollout: int
    window: int
    end_turn: int
    state: Any
    example: Example | None
    q: float = 0.0
    advantage: float = 0.0


def split_rollout(rollout: Rollout, config: SplitConfig, turns: ChatRenderer) -> list[SubTrajectory]:
    """The rollout's K sub-trajectories, truncated rollouts included (a cut run is still split)."""
    if len(rollout.states) != len(rollout.turns):
        raise ValueError(f"rollout {rollout.index}: {len(rollout.states)} states for {len(rollout.turns)} turns")
    if not any(t.role == "assistant" for t in rollout.turns):
        return []  # the policy never acted: nothing to judge or train
    manifest, examples = split_examples(rollout.turns, config, turns)
    by_window = {e.window: e for e in examples}
    return [
        SubTrajectory(rollout.task_id, rollout.index, w.number, w.target_end, rollout.states[w.target_end],
                      by_window.get(w.number))
        for w in manifest.windows
    ]


# --------------------------------------------------------------------------- rollout production


def rollout_seed(seed: int, batch: int, task: int, index: int) -> int:
    """A sampling seed per rollout, stable across processes (``hash()`` of a str is not)."""
    return (seed * 1_000_003 + batch * 10_007 + task * 101 + index) % 2**31


class WeightGate:
    """Many generations at once, a weight swap alone (a readers-writer lock).

    ``generating()`` around each model call, ``swapping()`` around a weight swap: the swap waits
    for the calls in flight and holds new ones until it is done, so one call never mixes two
    versions. A session held back by a swap is "paused" in the pool's counts (the sandbox waits for
    the trainer)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._swapping = False
        self._waiting_swaps = 0
        # other processes generating with these weights (rl_drivers.DriverGroup): a swap also waits
        # for their calls in flight (``begin_swap``) and lets their held calls go (``end_swap``)
        self.peers: list[Any] = []

    @contextlib.contextmanager
    def generating(self) -> Iterator[None]:
        session = current_session()
        with self._cond:
            if self._swapping or self._waiting_swaps:
                if session is not None:
                    session.state("paused")
                while self._swapping or self._waiting_swaps:
                    self._cond.wait()
                if session is not None:
                    session.state("on_model")
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def swapping(self) -> Iterator[None]:
        with self._cond:
            self._waiting_swaps += 1
            while self._swapping or self._readers:
                self._cond.wait()
            self._waiting_swaps -= 1
            self._swapping = True
        peers = list(self.peers)
        try:
            for peer in peers:
                peer.begin_swap()
            yield
        finally:
            for peer in peers:
                peer.end_swap()
            with self._cond:
                self._swapping = False
                self._cond.notify_all()


# --------------------------------------------------------------------------- local policy serving


class LocalPolicy:
    """Policy served on this worker with transformers: its own copy of the weights for generation.

    The trainer's model changes during an update; rollouts generate with this copy, which
    ``publish`` refreshes under the ``gate`` (no generation sees half a swap). Runners hold
    ``gate.generating()`` around each generation and read ``version`` inside it.
    """

    def __init__(self, model: Any, tokenizer: Any, version: int = 0) -> None:
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.version = version
        self.gate = WeightGate()

    def publish(self, model: Any, version: int) -> None:
        with self.gate.swapping(), torch.no_grad():
            for mine, theirs in zip(self.model.parameters(), model.parameters(), strict=True):
                mine.copy_(theirs.detach())
            self.version = version

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device


# --------------------------------------------------------------------------- the update


# --------------------------------------------------------------------------- judging


def judge_subtrajectories(subs: Sequence[SubTrajectory], tasks: dict[str, Task], judge: Judge) -> None:
    """Set Q on every sub-trajectory. Each distinct (task, state) is judged once: windows that end
    on the same submission state (nothing changed in between) share their score."""
    keys: dict[tuple[str, Any], int] = {}
    requests: list[tuple[Task, Any]] = []
    for s in subs:
        key = (s.task_id, s.state)
        if key not in keys:
            keys[key] = len(requests)
            requests.append((tasks[s.task_id], s.state))
    scores = judge.score(requests) if requests else []
    if len(scores) != len(requests):
        raise RLError(f"the judge returned {len(scores)} scores for {len(requests)} requests")
    for s in subs:
        s.q = float(scores[keys[(s.task_id, s.state)]])


def assign_advantages(subs: Sequence[SubTrajectory]) -> dict[str, list[list[float]]]:
    """A(m,i,j) on every sub-trajectory, group = the task; returns the advantages by task."""
    groups: dict[str, dict[int, list[SubTrajectory]]] = {}
    for s in subs:
        groups.setdefault(s.task_id, {}).setdefault(s.rollout, []).append(s)
    q = {task: [[s.q for s in rows[j]] for j in sorted(rows)] for task, rows in groups.items()}
    advantages = batch_advantages(q)
    for task, rows in groups.items():
        for j, a_row in zip(sorted(rows), advantages[task], strict=True):
            for s, a in zip(rows[j], a_row, strict=True):
                s.advantage = a
    return advantages


# --------------------------------------------------------------------------- the run


def train_rl(
    settings: RLSettings,
    tasks: Sequence[Task],
    runner: RolloutRunner,
    judge: Judge,
    reporter: Reporter,
    *,
    make_policy: Callable[[Any, Any, int], Policy] | None = None,
    start_stage: int = 1,
    start_from: str | None = None,
    evaluation: Any = None,
    make_trainer: Callable[[RLSettings, Any], Any] | None = None,
    make_drivers: Callable[[Sequence[Task], RolloutRunner, Policy, RolloutStates], Any] | None = None,
) -> dict[str, Any]:
    """Run the stages from ``start_stage`` (a resumed job skips finished ones, starting from the
    last stage checkpoint ``start_from``). ``evaluation`` (an ``rl_eval.Evaluation``) runs the eval
    tasks every ``settings.eval_every`` iterations. ``make_trainer(settings, tokenizer)``: the
    trainer (LocalTrainer's interface), by default a LocalTrainer; worker/training/sharded.py's
    ShardedTrainer trains on several ranks. Returns the per-stage records and final metrics."""

    check_stages(settings.stages)
    if not tasks:
        raise RLError("no tasks to train on")
    if settings.n_rollouts < 1:
        raise RLError("n_rollouts must be at least 1")
    torch.manual_seed(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(settings.policy, local_files_only=True)
    turns = renderer_for(tokenizer, settings.policy)
    by_id = {t.id: t for t in tasks}
    trainer = (make_trainer or LocalTrainer)(settings, tokenizer)
    states = RolloutStates(max(1, settings.concurrency))

    total_iterations = sum(s.iterations for s in settings.stages)
    step = sum(s.iterations for s in settings.stages[: start_stage - 1])
    path = start_from or settings.policy
    records: list[dict[str, Any]] = []
    last: dict[str, float] = {}
    for m in range(start_stage, len(settings.stages) + 1):
        stage = settings.stages[m - 1]
        # the stage starts from the previous stage's checkpoint (or the job's policy), reloaded
        # from disk: exactly what a resumed job or a later job would load
        # Only from a stage checkpoint of this job does the optimizer state carry over: the starting
        # policy may be an SFT checkpoint whose optimizer.pt is the HF Trainer's.
        trainer.start_stage(path, with_optimizer=m > start_stage or start_from is not None)
        model = trainer.model
        policy = make_policy(model, tokenizer, step) if make_policy else LocalPolicy(model, tokenizer, step)
        policy.publish(model, step)
        reporter.log(f"stage {m}: timeout {stage.timeout_s:g} s, {stage.iterations} iterations, from {path}")
        record: dict[str, Any] = {"stage": m, "timeout_s": stage.timeout_s, "iterations": stage.iterations,
                                  "start_from": str(path), "first_step": step + 1}
        pool = RolloutPool(
            tasks, runner, policy, n_rollouts=settings.n_rollouts, timeout_s=stage.timeout_s,
            seed_for=lambda batch, t, j, m=m: rollout_seed(settings.seed + 1000 * m, batch, t, j),
            concurrency=settings.concurrency, partial=settings.partial_rollouts, max_staleness=settings.max_staleness,
            hosts=settings.sandbox_hosts, per_host=settings.sandboxes_per_host, states=states,
            is_failure=lambda r: getattr(r, "end_state", "") == "error", should_stop=reporter.should_stop,
            iterations=stage.iterations,
            # the sessions in driver processes (rl_drivers), started for the stage's policy
            drivers=make_drivers(tasks, runner, policy, states) if make_drivers else None,
        )
        try:
            for it in range(stage.iterations):
                if reporter.should_stop():
                    raise RLStopped()
                where = f"stage {m}/{len(settings.stages)}, iteration {it + 1}/{stage.iterations}"
                t0 = time.perf_counter()
                t0_slots = time.monotonic()
                try:
                    rollouts, generate_s = pool.next_batch(
                        last=it + 1 == stage.iterations,
                        on_wait=lambda where=where, step=step: reporter.progress(step, total_iterations,
                                                                      f"{where}: rollouts {state_line(states)}"))
                except InterruptedError:
                    raise RLStopped() from None
                t1 = time.perf_counter()
                if not rollouts:
                    raise RLError(f"every rollout of the batch failed: {pool.failed[-1][2] if pool.failed else '?'}")
                subs = [s for r in rollouts for s in split_rollout(r, settings.split, turns)]
                if not subs:
                    raise RLError(no_turns_reason(rollouts, stage))
                depth = judge.queue_depth()
                judge_subtrajectories(subs, by_id, judge)
                advantages = assign_advantages(subs)
                t2 = time.perf_counter()
                stats = trainer.update(subs)
                step += 1
                # sessions still running go on with the new weights once they are published (the
                # swap pauses their next model call, no longer)
                policy.publish(model, step)
                t3 = time.perf_counter()
                last = iteration_metrics(m, stage, rollouts, subs, advantages, stats, policy.version)
                counts = states.snapshot()
                last.update(judge_queue_depth=float(max(depth, judge.queue_depth())),
                            rollouts_failed=float(pool.failed_this_batch),
                            rollouts_on_model=float(counts["on_model"]), rollouts_on_tools=float(counts["on_tools"]),
                            rollouts_done=float(counts["done"]),
                            sandbox_idle_share=states.idle_share(t0_slots, time.monotonic()),
                            time_rollout_s=t1 - t0, time_generate_s=generate_s, time_judge_s=t2 - t1,
                            time_train_s=t3 - t2, time_iteration_s=t3 - t0)
                if evaluation is not None:  # eval_score next to reward, with the policy just published
                    last.update(evaluation.after_update(settings.eval_every, step, policy, stage.timeout_s))
                reporter.metric(step, **last)
                reporter.progress(step, total_iterations,
                                  f"{where}: reward {last['reward']:.3f}, truncated {last['truncation_rate']:.0%}; "
                                  f"rollouts {state_line(states)}")
        except BaseException:
            pool.close(cancel=True)  # a failed or stopped run does not wait hours for its rollouts to end
            raise
        pool.close()  # the stage's last iteration waited for every rollout: nothing is in flight
        path = settings.output_dir / f"stage-{m}"
        save_stage(trainer, path)
        record.update(checkpoint=str(path), last_step=step, final_reward=last.get("reward"))
        records.append(record)
        reporter.stage_done(m, path, record)
    return {"stages": records, "final_path": str(path), "iterations": step, "precision": settings.precision,
            "lora": is_lora(trainer.model), **{f"final_{k}": v for k, v in last.items()
                                                                              if k in ("reward", "q_mean")}}


def no_turns_reason(rollouts: Sequence[Rollout], stage: Stage) -> str:
    """Why a batch has nothing to train on, with what the user can change."""
    ends = Counter(r.end_state for r in rollouts)
    reason = ("no rollout produced an assistant turn: nothing to judge or train (the rollouts ended "
              + ", ".join(f"{n} {end}" for end, n in sorted(ends.items())) + ")")
    if ends.get("timed_out"):
        reason += (f"; the stage's timeout of {stage.timeout_s:g} s ended them before their first turn: "
                   "give the stages longer")
    return reason


def save_stage(trainer: Any, path: Path) -> None:
    """Save the stage's policy at ``path`` whole or not at all: into a fresh folder beside it, which
    then takes its place. Saving over a folder that already exists (a retry of a run whose first
    try saved part of a stage, with other options) would leave its files beside the new ones: an
    adapter_config.json there makes the next stage load a full policy as LoRA."""
    partial = path.with_name(f".{path.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    trainer.save(partial)
    if path.exists():
        shutil.rmtree(path)
    partial.rename(path)


def state_line(states: RolloutStates) -> str:
    """The pool's live counts in words: what the job page's progress line shows."""
    c = states.snapshot()
    running = c["waiting_sandbox"] + c["on_model"] + c["on_tools"] + c["paused"]
    return (f"{running} running ({c['on_model']} on the model, {c['on_tools']} on tools, {c['paused']} paused), "
            f"{c['done']} done, {c['failed']} failed")


def iteration_metrics(stage_number: int, stage: Stage, rollouts: Sequence[Rollout], subs: Sequence[SubTrajectory],
                      advantages: dict[str, list[list[float]]], stats: LossStats | None,
                      version: int) -> dict[str, float]:
    """What the job page plots per iteration."""
    finals: dict[tuple[str, int], float] = {}
    for s in subs:  # windows come in order: the last one of a rollout holds its final score
        finals[(s.task_id, s.rollout)] = s.q
    n = max(1, len(rollouts))
    out = {
        "stage": float(stage_number),
        "timeout_s": stage.timeout_s,
        "reward": sum(finals.values()) / max(1, len(finals)),
        "q_mean": sum(s.q for s in subs) / max(1, len(subs)),
        "truncation_rate": sum(1 for r in rollouts if r.truncated) / n,
        "rollout_turns": sum(len(r.turns) for r in rollouts) / n,
        "rollout_tokens": sum(r.tokens for r in rollouts) / n,
        "rollout_elapsed_s": sum(r.elapsed_s for r in rollouts) / n,
        "subtrajectories_per_rollout": len(subs) / n,
        "staleness": sum(version - 1 - r.policy_version for r in rollouts) / n,
        "segments_per_rollout": sum(max(1, len(r.segments)) for r in rollouts) / n,
        **advantage_spread(advantages).as_metrics(),
    }
    if stats is not None:
        out.update(loss=stats.loss, kl=stats.kl, clip_fraction=stats.clip_fraction, trained_tokens=float(stats.tokens))
        if stats.sampled_tokens:
            out.update(sampler_mismatch=stats.sampler_mismatch, tis_capped_fraction=stats.tis_capped_fraction)
    return out
