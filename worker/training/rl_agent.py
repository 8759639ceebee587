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

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from django.db import connections

from apps.jobs.models import Job
from apps.jobs.services.control import cancel_job
from apps.judging.llm.records import CallRecord, ChatResult, LLMBadResponse
from apps.judging.models import ModelEndpoint
from apps.judging.services import request_judge_run
from apps.papers.models import Paper
from apps.rubrics.models import RubricVersion
from apps.trajectories.recorder import TrajectoryRecorder
from apps.trajectories.tokens import turn_text
from apps.trajectories.windows import TurnRow
from worker.agent import AgentConfig, AgentTask, run_agent
from worker.judge.helping import help_with_queued_judge
from worker.sandbox import SandboxSpec, open_sandbox
from worker.training.rl import LocalPolicy, RLError, Rollout, Task, segments_of
from worker.training.rl_pool import Session, current_session

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
    """The apps/judging/llm ``chat`` interface over a ``LocalPolicy`` (small policies on the worker).

    Tool schemas are not rendered (the tiny chat template has no tool syntax); the agent reads
    tool calls from the text, as with any model without native tool calling.
    """

    def __init__(self, policy: LocalPolicy, max_new_tokens: int = 512, temperature: float = 1.0) -> None:
        self.policy = policy
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature

    def chat(self, messages: Sequence[dict[str, Any]], **params: Any) -> ChatResult:

        tokenizer = self.policy.tokenizer
        record = CallRecord(endpoint="rl-policy", model=f"policy-v{self.policy.version}", attempts=1)
        started = time.monotonic()
        plain = [{"role": m["role"], "content": str(m.get("content") or "")} for m in messages]
        ids = tokenizer.apply_chat_template(plain, add_generation_prompt=True, tokenize=True, return_dict=True,
                                            return_tensors="pt")["input_ids"]
        max_new = int(params.get("max_tokens") or self.max_new_tokens)
        temperature = float(params.get("temperature") or self.temperature)
        # one generation never mixes two policy versions: publish waits for it
        with self.policy.gate.generating(), torch.no_grad():
            ids = ids.to(self.policy.device)
            # output_logits: the raw logits of each step, before temperature and other warpers: the
            # sampler's log-probs at temperature 1, the quantity the trainer computes (and vLLM's default)
            out = self.policy.model.generate(
                input_ids=ids, max_new_tokens=max_new, do_sample=temperature > 0, temperature=temperature,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                output_logits=True, return_dict_in_generate=True,
            )
        new = out.sequences[0, ids.shape[1]:]
        if new.numel() == 0:
            raise LLMBadResponse("the policy generated no tokens", record)
        logprobs = [float(torch.log_softmax(step[0].float(), dim=-1)[token])
                    for step, token in zip(out.logits, new.tolist(), strict=False)]
        record.prompt_tokens, record.completion_tokens = int(ids.shape[1]), int(new.numel())
        record.latency_s = record.total_s = time.monotonic() - started
        record.ok = True
        finish = "stop" if int(new[-1]) == tokenizer.eos_token_id else "length"
        return ChatResult(tokenizer.decode(new, skip_special_tokens=True), record, finish,
                          token_ids=new.tolist(), logprobs=logprobs)


class TrackedChat:
    """The policy's chat client as a pool session uses it: each call is "on the model" in the
    pool's counts, waits out a weight swap (``gate``), and notes the version that answered."""

    def __init__(self, chat: Any, policy: Any, session: Session | None) -> None:
        self.chat_client = chat
        self.config = getattr(chat, "config", None)  # the agent picks structured tool calls by backend
        self.policy = policy
        self.session = session
        self.last_version: int | None = None

    def chat(self, messages: Sequence[dict[str, Any]], **params: Any) -> ChatResult:
        if self.session is not None:
            self.session.state("on_model")
        gate = getattr(self.policy, "gate", None)
        try:
            with gate.generating() if gate is not None else contextlib.nullcontext():
                self.last_version = int(self.policy.version)
                return self.chat_client.chat(messages, **params)
        finally:
            if self.session is not None:
                self.session.state("on_tools")

    def close(self) -> None:
        close = getattr(self.chat_client, "close", None)
        if close is not None:
            close()


class AgentRunner:
    """``RolloutRunner`` for papers: one sandbox per rollout, the agent cut at the stage timeout.

    Every rollout is also recorded turn by turn as a Trajectory (source "rollout", with its
    policy version), so a running rollout can be watched on its trajectory page.
    """

    def __init__(self, work_dir: Path, *, job_id: int | None = None, sandbox_backend: str = "auto",
                 image: str = "", l_max: int = 32768, max_steps: int = 1000, memory_mb: int = 4096,
                 cpus: float = 2.0, should_stop: Callable[[], bool] | None = None) -> None:
        self.work_dir = Path(work_dir)  # the data folder: papers/ and submissions/ go under it
        self.job_id = job_id
        self.sandbox_backend = sandbox_backend
        self.image = image
        self.l_max = l_max
        self.max_steps = max_steps
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.should_stop = should_stop
        self.run_id = f"job{job_id}" if job_id else uuid.uuid4().hex[:10]
        self.live: dict[tuple[str, int], Any] = {}  # the open sandbox of each running rollout

    def __getstate__(self) -> dict[str, Any]:
        """A copy for a rollout driver process (rl_drivers): its sessions learn of a stop from the
        pool (``Session.cancelled``), and its open sandboxes are its own."""
        return {**self.__dict__, "should_stop": None, "live": {}}

    def _chat(self, policy: Any) -> Any:
        return policy.chat_client() if hasattr(policy, "chat_client") else LocalPolicyChat(policy)

    def run(self, task: Task, index: int, timeout_s: float, policy: Any, seed: int) -> Rollout:


        try:
            return self._run(task, index, timeout_s, policy)
        finally:
            if threading.current_thread() is not threading.main_thread():
                connections.close_all()  # a rollout thread's own connections; the thread ends soon

    def _run(self, task: Task, index: int, timeout_s: float, policy: Any) -> Rollout:
        paper: PaperTask = task.data
        session = current_session()
        version = policy.version
        started = time.perf_counter()
        agent_task = AgentTask(paper_markdown=paper.markdown, addendum=paper.addendum,
                               instructions=paper.instructions, blacklist=list(paper.blacklist))
        mounts = agent_task.write_files(self.work_dir / "rl" / self.run_id / "papers" / f"{paper.slug}-{index}")
        spec = SandboxSpec(backend=self.sandbox_backend, image=paper.image or self.image, cpus=self.cpus,
                           memory_mb=self.memory_mb, network=False, wall_clock_s=timeout_s + 300,
                           mounts_ro=mounts, job_id=self.job_id, docker_host=session.host if session else "")
        config = AgentConfig(max_steps=self.max_steps, time_limit_s=timeout_s, l_max=self.l_max,
                             tokenizer=getattr(policy, "tokenizer", None))
        recorder = TrajectoryRecorder.start(
            paper=Paper.objects.filter(pk=paper.paper_id).first(), source="rollout", model="rl-policy",
            policy_version=f"v{version}", title=f"{paper.slug} RL {self.run_id} rollout {index + 1} (policy v{version})",
            meta={"rl_job": self.job_id, "rollout": index, "timeout_s": timeout_s},
        )
        if session is not None:
            session.recording(recorder.trajectory.pk)
        chat = TrackedChat(self._chat(policy), policy, session)
        versions: list[tuple[int, int]] = []

        def on_turn(turn: Any) -> None:
            if turn.role == "assistant" and chat.last_version is not None:
                # the segment this turn belongs to: the version that generated it
                turn.meta["policy_version"] = chat.last_version
                versions.append((turn.index, chat.last_version))
            recorder.add_turn(turn)

        key = (task.id, index)
        try:
            with open_sandbox(spec) as sandbox:
                self.live[key] = sandbox
                if session is not None:
                    session.state("on_tools")
                try:
                    result = run_agent(chat, sandbox, agent_task, config, on_turn=on_turn,
                                       should_stop=lambda: bool(self.should_stop and self.should_stop())
                                       or bool(session and session.cancelled()))
                finally:
                    self.live.pop(key, None)
                rows, commits = rollout_rows(result)
                # a flagged run is disqualified: every state scores 0, nothing is exported; a killed
                # sandbox has nothing left to export (the rollout failed)
                wanted = set() if result.flagged or sandbox.closed else {c for c in commits if c}
                folders = self._export(sandbox, task, index, version, wanted)
            segments = segments_of(versions)
            recorder.finish(result, submission_url=folders.get(result.final_commit, ""),
                            extra={"segments": [list(s) for s in segments]})
        except Exception as exc:
            recorder.abandon(f"{type(exc).__name__}: {exc}")
            raise
        states = [folders.get(c, EMPTY_SUBMISSION) if c else EMPTY_SUBMISSION for c in commits]
        usage = result.usage or {}
        return Rollout(task.id, index, segments[0][1] if segments else version, timeout_s, rows, states,
                       result.end_state, result.wall_s, time.perf_counter() - started,
                       int(usage.get("completion_tokens", 0)),
                       meta={"final_commit": result.final_commit, "flagged": result.flagged, "error": result.error,
                             "trajectory": recorder.trajectory.pk}, segments=segments)

    def _export(self, sandbox: Any, task: Task, index: int, version: int, commits: set[str]) -> dict[str, str]:
        folders = {commit: f"submissions/rl-{self.run_id}-{task.id}-v{version}-{index + 1}-{commit[:12]}"
                   for commit in sorted(commits)}
        sandbox.export_submissions({commit: self.work_dir / relative for commit, relative in folders.items()})
        return folders


def rollout_rows(result: Any) -> tuple[list[TurnRow], list[str | None]]:
    """The agent's turns as training rows (rendered as the trajectory store and the agent's
    context render them; an assistant turn keeps the ids its policy sampled, which windows train
    on instead of that render) and the submission commit current after each turn."""

    rows: list[TurnRow] = []
    commits: list[str | None] = []
    current: str | None = None
    for turn in result.turns:
        ids = tuple(getattr(turn, "token_ids", None) or ())
        logprobs = tuple(getattr(turn, "logprobs", None) or ())
        rows.append(TurnRow(turn.role, turn_text(turn.content, "", turn.tool_calls), token_ids=ids,
                            logprobs=logprobs if len(logprobs) == len(ids) else ()))
        current = turn.submission_commit or current  # unchanged turns keep the last commit
        commits.append(current)
    return rows, commits


class QueueJudge:
    """``Judge`` through the judge job kind: one judge job per distinct submission, waited for.

    Train-split papers queue at priority 9 and eval ones at 0, so evaluation judging is never
    starved by the RL flood. A judge job still queued after ``help_after_s`` while nothing more
    urgent waits is run by this worker itself (the task's conditional claim runs it once, here
    or on a judge worker), so a single-worker install never waits forever on its own request.
    A judge job that fails (endpoint down, every leaf invalid) fails the iteration: a made-up 0
    would be a false reward.
    """

    def __init__(self, endpoint_name: str, user: Any = None, *, poll_s: float = 0.2, help_after_s: float = 30.0,
                 timeout_s: float = 6 * 3600, code_only: bool = False,
                 should_stop: Callable[[], bool] | None = None, reproduce: dict[str, Any] | None = None) -> None:
        self.endpoint_name = endpoint_name
        self.user = user
        self.poll_s = poll_s
        self.help_after_s = help_after_s
        self.timeout_s = timeout_s
        self.code_only = code_only
        self.should_stop = should_stop
        self.reproduce = reproduce  # the judge's reproduction options: reproduce.sh runs before grading
        self.jobs: list[int] = []  # every judge job this judge queued, for the record

    def queue_depth(self) -> int:
        return Job.objects.filter(kind="judge", state=Job.State.QUEUED).count()

    def score(self, requests: Sequence[tuple[Task, Any]]) -> list[float]:
        endpoint = ModelEndpoint.objects.get(name=self.endpoint_name)
        scores: list[float | None] = [None] * len(requests)
        pending: dict[int, int] = {}
        for k, (task, state) in enumerate(requests):
            if state == EMPTY_SUBMISSION:
                scores[k] = 0.0  # nothing submitted yet (or a disqualified run): no judge call
                continue
            paper_task: PaperTask = task.data
            paper = Paper.objects.get(pk=paper_task.paper_id)
            version = RubricVersion.objects.get(pk=paper_task.rubric_version) if paper_task.rubric_version else None
            job = request_judge_run(paper=paper, endpoint=endpoint, submission=state, user=self.user,
                                    version=version, code_only=self.code_only, reproduce=self.reproduce)
            pending[job.pk] = k
            self.jobs.append(job.pk)
        self._wait(pending, scores)
        return [float(s) for s in scores]

    def _wait(self, pending: dict[int, int], scores: list[float | None]) -> None:
        started = time.monotonic()
        while pending:
            if self.should_stop is not None and self.should_stop():
                for job in Job.objects.filter(pk__in=list(pending)).exclude(state__in=Job.FINISHED):
                    cancel_job(job)
                raise RLError("stopped while waiting for the judge")
            for job in Job.objects.filter(pk__in=list(pending), state__in=Job.FINISHED):
                k = pending.pop(job.pk)
                if job.state != Job.State.SUCCEEDED or job.result.get("score") is None:
                    raise RLError(f"judge job {job.pk} ended {job.state}: {job.error or 'no score'}")
                scores[k] = float(job.result["score"])
            if not pending:
                return
            waited = time.monotonic() - started
            if waited > self.timeout_s:
                raise RLError(f"{len(pending)} judge jobs did not finish within {self.timeout_s:g} s")
            if help_with_queued_judge(pending, lambda _pk, waited=waited: waited, self.help_after_s) is None:
                time.sleep(self.poll_s)
