"""Evaluation inside progressive RL: every ``eval_every`` iterations, the eval tasks with the current policy.

KLong watches a held-back set of papers while it trains: the training reward is measured on the
papers the policy is being fitted to, so it says little about whether the policy got better at
reproducing papers it has not seen. Every k iterations (``RLSettings.eval_every``; 0 = never)
this runs ``n_rollouts`` rollouts of each eval task with the policy as it is after that
iteration's update, under the current stage's timeout, and judges the final submission state of
each, exactly as a training rollout's last sub-trajectory is judged.

The judging goes through the same ``Judge`` as training. For papers that is the judge job queue
(``rl_agent.QueueJudge``), where an eval-split paper's judge jobs are queued at priority 0 and a
train-split paper's at 9 (``apps.judging.services.JUDGE_PRIORITY``): the eval requests of every
running RL job overtake the flood of training requests, which is why the queue has priorities.
The eval rollouts are never trained on: their sub-trajectories are not built at all.

The scores become metrics of the iteration they follow (``eval_score`` next to ``reward``), so
the job page plots them on the same axis and the stage timeline shows the last one per stage.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from worker.training.rl import Judge, RLError, RLStopped, Rollout, RolloutRunner, Task
from worker.training.rl_pool import run_concurrently

# Seeds of eval rollouts live apart from training ones (rl.rollout_seed), so an eval rollout never
# replays a training rollout's sampling.
EVAL_SEED_OFFSET = 7_919_000


@dataclass
class Evaluation:
    """What an RL run evaluates on: eval tasks, how to roll them out and who judges them.

    ``runner`` may be the training runner (the toy) or one of its own (the agent runner with
    its own submission folders); ``judge`` is normally the training judge, so eval requests go
    through the same queue. ``history`` keeps every evaluation's record for the run's result.
    """

    tasks: Sequence[Task]
    runner: RolloutRunner
    judge: Judge
    n_rollouts: int = 1
    seed: int = 0
    # Eval rollouts at once (threads; each its own sandbox): an eval of 10 papers under a 2 h
    # stage timeout takes 2 h, not 20. The toy's local policy still runs one at a time.
    concurrency: int = 16
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise RLError("evaluation needs at least one eval task")
        if self.n_rollouts < 1 or self.concurrency < 1:
            raise RLError("eval_rollouts and the eval concurrency must be at least 1")
        ids = [t.id for t in self.tasks]
        if len(set(ids)) != len(ids):
            raise RLError(f"eval task ids repeat: {ids}")

    def after_update(self, every: int, step: int, policy: Any, timeout_s: float) -> dict[str, float]:
        """The hook ``train_rl`` calls after each update (a method, so rl.py needs no import of
        this module): {} unless an evaluation is due at ``step``."""
        return evaluate(self, every, step, policy, timeout_s)


def eval_due(step: int, every: int) -> bool:
    """Evaluate after update ``step`` (1-based) when ``every`` > 0 divides it."""
    return every > 0 and step > 0 and step % every == 0


def final_state(rollout: Rollout) -> Any:
    """The submission state the run ended on (what PaperBench grades): the last turn's."""
    return rollout.states[-1] if rollout.states else ""


def evaluate(evaluation: Evaluation | None, every: int, step: int, policy: Any, timeout_s: float) -> dict[str, float]:
    """{} unless an evaluation is due at ``step``, else the eval metrics of the policy as
    published at ``step`` (its ``version``)."""
    if evaluation is None or not eval_due(step, every):
        return {}
    started = time.perf_counter()
    wanted = [(t, task, j) for t, task in enumerate(evaluation.tasks) for j in range(evaluation.n_rollouts)]

    def one(k: int) -> Rollout:
        t, task, j = wanted[k]
        seed = (EVAL_SEED_OFFSET + evaluation.seed * 1_000_003 + step * 10_007 + t * 101 + j) % 2**31
        return evaluation.runner.run(task, j, timeout_s, policy, seed)

    outcomes: list[Any] = [None] * len(wanted)

    def finished(k: int, result: Any) -> None:
        # a sandbox killed, a server gone: that eval rollout only; a stop request stops the run
        if isinstance(result, RLStopped) or (isinstance(result, BaseException) and not isinstance(result, Exception)):
            raise result
        outcomes[k] = result

    run_concurrently(range(len(wanted)), one, evaluation.concurrency, finished)
    rollouts = [(task, r) for (_, task, _), r in zip(wanted, outcomes, strict=True) if isinstance(r, Rollout)]
    errors = [f"{task.id} #{j + 1}: {type(r).__name__}: {r}" for (_, task, j), r in zip(wanted, outcomes, strict=True)
              if not isinstance(r, Rollout)]
    if not rollouts:  # nothing to judge; training goes on, the failures are on the record
        evaluation.history.append({"step": step, "timeout_s": timeout_s, "errors": errors})
        return {"eval_failed": float(len(errors))}
    t1 = time.perf_counter()
    scores = evaluation.judge.score([(task, final_state(r)) for task, r in rollouts])
    if len(scores) != len(rollouts):
        raise RLError(f"the judge returned {len(scores)} scores for {len(rollouts)} eval rollouts")
    by_task: dict[str, list[float]] = {}
    for (task, _), score in zip(rollouts, scores, strict=True):
        by_task.setdefault(task.id, []).append(float(score))
    flat = [float(s) for s in scores]
    metrics = {
        "eval_score": statistics.fmean(flat),
        # the spread over tasks of each task's mean: one lucky paper is visible as a wide range
        "eval_score_min": min(statistics.fmean(v) for v in by_task.values()),
        "eval_score_max": max(statistics.fmean(v) for v in by_task.values()),
        "eval_truncation_rate": sum(1 for _, r in rollouts if r.truncated) / len(rollouts),
        "eval_failed": float(len(errors)),
        "eval_policy_version": float(min(r.policy_version for _, r in rollouts)),
        "time_eval_rollout_s": t1 - started,
        "time_eval_judge_s": time.perf_counter() - t1,
    }
    evaluation.history.append({"step": step, "timeout_s": timeout_s, "scores": by_task, "errors": errors, **metrics})
    return metrics


def eval_tasks_from(tasks: Sequence[Task], prefix: str = "eval") -> list[Task]:
    """Tasks renamed for evaluation (the toy: the same kind of task under ids of its own)."""
    return [replace(t, id=f"{prefix}-{t.id}") for t in tasks]
