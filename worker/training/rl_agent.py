"""Rollouts of the real agent for RL: ``run_agent`` in a sandbox, judged through the priority queue.

A task is a paper with its rubric version and sandbox image. A rollout runs the agent (8a's
``worker.agent.run_agent``) with the current policy in a fresh sandbox, with the stage timeout as
its wall-clock limit (a run that reaches it ends "timed_out" and is kept). Every distinct
submission commit the turns produced is exported to a folder under data/submissions/, so the
state at the end of each sub-trajectory can be judged after the sandbox is gone.

Judging goes through the judge job kind and so through the priority queue (eval-split papers
at priority 0 before train-split ones at 9, ``apps.judging.services.request_judge_run``); the
queue's depth is the number of judge jobs waiting.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.llm.records import CallRecord, ChatResult, LLMBadResponse
from worker.training.examples import TurnRow
from worker.training.rl import LocalPolicy, RLError, Rollout, Task

EMPTY_SUBMISSION = ""  # no commit yet: nothing submitted, Q = 0 without a judge call


@dataclass
class PaperTask:
    """What the agent runner needs of one paper (built by the engine from the database)."""

    paper_id: int
    slug: str
    markdown: str
    addendum: str = ""
    instructions: str = ""
    blacklist: list[str] = field(default_factory=list)
    image: str = ""
    rubric_version: int | None = None


class LocalPolicyChat:
    """The worker/llm ``chat`` interface over a ``LocalPolicy`` (small policies on the worker).

    Tool schemas are not rendered (the tiny chat template has no tool syntax); the agent reads
    tool calls from the text, as with any model without native tool calling.
    """

    def __init__(self, policy: LocalPolicy, max_new_tokens: int = 512, temperature: float = 1.0) -> None:
        self.policy = policy
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature

    def chat(self, messages: Sequence[dict[str, Any]], **params: Any) -> ChatResult:
        import torch

        tokenizer = self.policy.tokenizer
        record = CallRecord(endpoint="rl-policy", model=f"policy-v{self.policy.version}", attempts=1)
        started = time.monotonic()
        plain = [{"role": m["role"], "content": str(m.get("content") or "")} for m in messages]
        ids = tokenizer.apply_chat_template(plain, add_generation_prompt=True, tokenize=True, return_dict=True,
                                            return_tensors="pt")["input_ids"]
        max_new = int(params.get("max_tokens") or self.max_new_tokens)
        temperature = float(params.get("temperature") or self.temperature)
        # one generation never mixes two policy versions: publish waits for the lock
        with self.policy.lock, torch.no_grad():
            ids = ids.to(self.policy.device)
            out = self.policy.model.generate(
                input_ids=ids, max_new_tokens=max_new, do_sample=temperature > 0, temperature=temperature,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
        new = out[0, ids.shape[1]:]
        if new.numel() == 0:
            raise LLMBadResponse("the policy generated no tokens", record)
        record.prompt_tokens, record.completion_tokens = int(ids.shape[1]), int(new.numel())
        record.latency_s = record.total_s = time.monotonic() - started
        record.ok = True
        finish = "stop" if int(new[-1]) == tokenizer.eos_token_id else "length"
        return ChatResult(tokenizer.decode(new, skip_special_tokens=True), record, finish)


def turn_text(content: str, tool_calls: Sequence[dict[str, Any]]) -> str:
    """An agent turn as training text: its content, then each tool call as a tagged JSON line."""
    calls = "".join(f"\n<tool_call>{json.dumps(c, sort_keys=True)}</tool_call>" for c in tool_calls or ())
    return (content or "") + calls


class AgentRunner:
    """``RolloutRunner`` for papers: one sandbox per rollout, the agent cut at the stage timeout."""

    def __init__(self, submissions_root: Path, *, sandbox_backend: str = "auto", l_max: int = 32768,
                 max_steps: int = 1000, memory_mb: int = 4096, cpus: float = 2.0,
                 should_stop: Callable[[], bool] | None = None) -> None:
        self.submissions_root = Path(submissions_root)
        self.sandbox_backend = sandbox_backend
        self.l_max = l_max
        self.max_steps = max_steps
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.should_stop = should_stop
        self.run_id = uuid.uuid4().hex[:10]

    def _chat(self, policy: Any) -> Any:
        return policy.chat_client() if hasattr(policy, "chat_client") else LocalPolicyChat(policy)

    def run(self, task: Task, index: int, timeout_s: float, policy: Any, seed: int) -> Rollout:
        from worker.agent import AgentConfig, AgentTask, run_agent
        from worker.sandbox import SandboxSpec, open_sandbox

        paper: PaperTask = task.data
        version = policy.version
        started = time.perf_counter()
        spec = SandboxSpec(backend=self.sandbox_backend, image=paper.image, cpus=self.cpus,
                           memory_mb=self.memory_mb, network=False, wall_clock_s=timeout_s + 300)
        config = AgentConfig(max_steps=self.max_steps, time_limit_s=timeout_s, l_max=self.l_max,
                             tokenizer=getattr(policy, "tokenizer", None))
        agent_task = AgentTask(paper_markdown=paper.markdown, addendum=paper.addendum,
                               instructions=paper.instructions, blacklist=list(paper.blacklist))
        with open_sandbox(spec) as sandbox:
            result = run_agent(self._chat(policy), sandbox, agent_task, config, should_stop=self.should_stop)
            rows, commits = self._rows(result)
            folders = self._export(sandbox, task, index, {c for c in commits if c})
        states = [folders.get(c, EMPTY_SUBMISSION) if c else EMPTY_SUBMISSION for c in commits]
        tokens = int(result.usage.get("completion_tokens", 0)) if isinstance(result.usage, dict) else 0
        return Rollout(task.id, index, version, timeout_s, rows, states, result.end_state, result.wall_s,
                       time.perf_counter() - started, tokens,
                       meta={"final_commit": result.final_commit, "flagged": result.flagged, "error": result.error})

    @staticmethod
    def _rows(result: Any) -> tuple[list[TurnRow], list[str | None]]:
        rows: list[TurnRow] = []
        commits: list[str | None] = []
        current: str | None = None
        for turn in result.turns:
            rows.append(TurnRow(turn.role, turn_text(turn.content, turn.tool_calls)))
            current = turn.submission_commit or current  # unchanged turns keep the last commit
            commits.append(current)
        return rows, commits

    def _export(self, sandbox: Any, task: Task, index: int, commits: set[str]) -> dict[str, str]:
        folders = {}
        for commit in sorted(commits):
            name = f"rl-{self.run_id}-{task.id}-{index}-{commit[:12]}"
            dest = self.submissions_root / name
            sandbox.export_submission(dest, commit)
            folders[commit] = f"{self.submissions_root.name}/{name}"
        return folders


class QueueJudge:
    """``Judge`` through the judge job kind: one judge job per distinct submission, waited for.

    Train-split papers queue at priority 9 and eval ones at 0, so evaluation judging is never
    starved by the RL flood. A judge job that fails (endpoint down, every leaf invalid) fails
    the iteration: a made-up 0 would be a false reward.
    """

    def __init__(self, endpoint_name: str, user: Any = None, poll_s: float = 1.0, timeout_s: float = 6 * 3600,
                 code_only: bool = False) -> None:
        self.endpoint_name = endpoint_name
        self.user = user
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.code_only = code_only

    def queue_depth(self) -> int:
        from apps.jobs.models import Job

        return Job.objects.filter(kind="judge", state=Job.State.QUEUED).count()

    def score(self, requests: Sequence[tuple[Task, Any]]) -> list[float]:
        from apps.jobs.models import Job
        from apps.judging.models import ModelEndpoint
        from apps.judging.services import request_judge_run
        from apps.papers.models import Paper
        from apps.rubrics.models import RubricVersion

        endpoint = ModelEndpoint.objects.get(name=self.endpoint_name)
        scores: list[float | None] = [None] * len(requests)
        jobs: dict[int, int] = {}
        for k, (task, state) in enumerate(requests):
            if state == EMPTY_SUBMISSION:
                scores[k] = 0.0
                continue
            paper_task: PaperTask = task.data
            paper = Paper.objects.get(pk=paper_task.paper_id)
            version = RubricVersion.objects.get(pk=paper_task.rubric_version) if paper_task.rubric_version else None
            job = request_judge_run(paper=paper, endpoint=endpoint, submission=state, user=self.user,
                                    version=version, code_only=self.code_only)
            jobs[job.pk] = k
        deadline = time.monotonic() + self.timeout_s
        while jobs:
            for job in Job.objects.filter(pk__in=list(jobs), state__in=Job.FINISHED):
                k = jobs.pop(job.pk)
                if job.state != Job.State.SUCCEEDED or job.result.get("score") is None:
                    raise RLError(f"judge job {job.pk} ended {job.state}: {job.error or 'no score'}")
                scores[k] = float(job.result["score"])
            if jobs:
                if time.monotonic() > deadline:
                    raise RLError(f"{len(jobs)} judge jobs did not finish within {self.timeout_s:g} s")
                time.sleep(self.poll_s)
        return [float(s) for s in scores]
