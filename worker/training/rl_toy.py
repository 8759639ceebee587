"""A toy RL task for tests, demos and the benchmark: a tiny local policy and a programmatic rubric.

The "agent" writes a submission file turn by turn: each assistant turn is sampled from the
policy (transformers, on this worker) and appended to the file; a tool turn acknowledges it.
Time runs on a simulated clock (``seconds_per_token`` per generated token plus
``seconds_per_turn`` per step), so a stage timeout of 2 h cuts the rollout after a fixed amount
of work, exactly and reproducibly on any machine; the cut turn is kept, and so is the rollout.

The judge scores the submission text against a PaperBench-format rubric tree whose leaves are
programmatic checks (like ``RubricCheck`` commands, but Python predicates, so thousands of
states are judged in milliseconds): the share of lowercase letters and the length of the file.
The tree is scored by ``apps.rubrics.scoring`` exactly as a judged paper is.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from apps.judging.judge.grader import grade_tree
from apps.judging.judge.prompts import PaperContext
from apps.judging.judge.submission import Submission
from apps.rubrics.paperbench import flatten
from apps.rubrics.scoring import ScoringPlan
from apps.trajectories.windows import TurnRow
from worker.training.rl import LocalPolicy, Rollout, Task, segments_of
from worker.training.rl_pool import current_session

SYSTEM = "You are an agent. Write the submission in plain lowercase words."


@dataclass(frozen=True)
class ToyTask:
    instructions: str = "Write the submission: lowercase words only."
    max_turns: int = 6  # assistant turns; then the agent submits on its own
    tokens_per_turn: int = 12
    seconds_per_token: float = 60.0  # simulated agent time per generated token
    seconds_per_turn: float = 120.0  # simulated tool time per step
    temperature: float = 1.0
    letter_thresholds: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
    length_thresholds: tuple[int, ...] = ()  # characters; needs time, so longer stages score more
    tool_sleep_s: float = 0.0  # real seconds each tool step takes (the benchmark's stand-in for a sandbox)


def toy_tasks(count: int = 1, **options: Any) -> list[Task]:
    return [Task(f"toy-{k + 1}", ToyTask(instructions=f"Task {k + 1}. " + ToyTask.instructions, **options))
            for k in range(count)]


def letter_share(text: str) -> float:
    return sum(1 for c in text if "a" <= c <= "z") / len(text) if text else 0.0


def toy_rubric(task: ToyTask) -> dict[str, Any]:
    """The PaperBench rubric tree of a toy task (leaves are the programmatic checks below)."""
    leaves = [
        {"id": f"letters-{p:.2f}", "requirements": f"At least {p:.0%} of the submission's characters are a-z.",
         "weight": 1, "sub_tasks": [], "task_category": "Code Development"}
        for p in task.letter_thresholds
    ] + [
        {"id": f"length-{n}", "requirements": f"The submission has at least {n} characters.",
         "weight": 1, "sub_tasks": [], "task_category": "Code Execution"}
        for n in task.length_thresholds
    ]
    return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, "klong-toy")), "requirements": task.instructions,
            "weight": 1, "sub_tasks": leaves, "task_category": None}


def _check(node_id: str) -> Callable[[str], bool]:
    kind, _, value = node_id.partition("-")
    if kind == "letters":
        return lambda text: letter_share(text) >= float(value)
    return lambda text: len(text) >= int(value)


class ToyJudge:
    """Q = the rubric score of the submission text (0..1): every leaf a programmatic check."""

    def __init__(self) -> None:
        self.calls = 0

    def score_one(self, task: ToyTask, text: str) -> float:
        nodes = flatten(toy_rubric(task))
        plan = ScoringPlan.from_nodes(nodes)
        leaves = {n.index: float(_check(str(n.node_id))(text)) for n in nodes if n.parent is not None}
        self.calls += 1
        return plan.score(leaves)[0]

    def score(self, requests: Sequence[tuple[Task, Any]]) -> list[float]:
        return [self.score_one(task.data, state or "") for task, state in requests]

    def queue_depth(self) -> int:
        return 0  # judged inline, nothing waits


class ModelJudge:
    """Q from a model judge: the toy submission graded leaf by leaf with PaperBench's protocol
    (``apps.judging.judge.grader.grade_tree``) through a apps/judging/llm client, states judged concurrently.

    The same path a paper's judge job takes, minus the job row: used when a toy run names a judge
    endpoint, and by the benchmark against the loopback stub to time judging as it really runs.
    """

    def __init__(self, client: Any, concurrency: int = 4) -> None:
        self.client = client
        self.concurrency = concurrency
        self._waiting = 0
        self._lock = threading.Lock()

    def score_one(self, task: ToyTask, text: str) -> float:


        with tempfile.TemporaryDirectory(prefix="klong-rl-toy-") as folder:
            Path(folder, "submission.txt").write_text(text)
            outcome = grade_tree(flatten(toy_rubric(task)), PaperContext("Toy task", task.instructions),
                                 Submission(Path(folder)), self.client)
        return float(outcome.score)

    def score(self, requests: Sequence[tuple[Task, Any]]) -> list[float]:

        self._waiting = len(requests)

        def one(request: tuple[Task, Any]) -> float:
            try:
                return self.score_one(request[0].data, request[1] or "")
            finally:
                with self._lock:
                    self._waiting -= 1

        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="rl-judge") as pool:
            return list(pool.map(one, requests))

    def queue_depth(self) -> int:
        return max(0, self._waiting)


def sample(policy: LocalPolicy, prompt_ids: list[int], max_new: int, temperature: float,
           seed: int) -> tuple[list[int], list[float]]:
    """Sample up to ``max_new`` tokens (stopping at end-of-turn) with a per-rollout generator, so a
    rollout is reproducible whatever else runs in the process (the trainer, other threads).

    Returns the ids and the sampler's log-prob of each: the policy's at temperature 1 (what the
    trainer computes, and what vLLM returns by default), the behaviour policy of the RL update."""

    model, eos = policy.model, policy.tokenizer.eos_token_id
    device = policy.device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    out: list[int] = []
    logprobs: list[float] = []
    with torch.no_grad():
        ids = torch.tensor([prompt_ids], device=device)
        result = model(input_ids=ids, use_cache=True)
        for _ in range(max_new):
            raw = result.logits[0, -1].float()
            logits = raw / max(temperature, 1e-5)
            token = int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))
            out.append(token)
            logprobs.append(float(torch.log_softmax(raw, dim=-1)[token]))
            if token == eos:
                break
            # the KV cache goes back in as ``past_key_values``: under any other name the model would
            # see the new token alone (what this sampler did before: the sampler's log-probs exposed it)
            result = model(input_ids=torch.tensor([[token]], device=device), past_key_values=result.past_key_values,
                           use_cache=True)
    return out, logprobs


class ToyRunner:
    """Rollouts of the toy task with a ``LocalPolicy``. Each turn generates under the policy's gate
    with the version published at that moment: a rollout the pool keeps running across an update
    continues with the new weights, and its turns say which version wrote them (its segments)."""

    def run(self, task: Task, index: int, timeout_s: float, policy: LocalPolicy, seed: int) -> Rollout:
        spec: ToyTask = task.data
        tokenizer = policy.tokenizer
        session = current_session()
        started = time.perf_counter()
        turns = [TurnRow("system", SYSTEM), TurnRow("user", spec.instructions)]
        states: list[Any] = ["", ""]
        written: list[str] = []
        versions: list[tuple[int, int]] = []
        clock = 0.0
        tokens = 0
        end_state = "submitted"
        for step in range(spec.max_turns):
            if session is not None and session.cancelled():
                end_state = "cancelled"
                break
            budget = int((timeout_s - clock - spec.seconds_per_turn) // spec.seconds_per_token)
            if budget <= 0:
                end_state = "timed_out"
                break
            messages = [{"role": t.role, "content": t.text} for t in turns]
            prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
            if session is not None:
                session.state("on_model")
            with policy.gate.generating():
                versions.append((len(turns), policy.version))
                new, logprobs = sample(policy, prompt_ids, min(spec.tokens_per_turn, budget), spec.temperature,
                                       seed * 31 + step)
            tokens += len(new)
            clock += spec.seconds_per_turn + len(new) * spec.seconds_per_token
            text = tokenizer.decode(new, skip_special_tokens=True)
            written.append(text)
            turns.append(TurnRow("assistant", text, token_ids=tuple(new), logprobs=tuple(logprobs)))
            states.append("\n".join(written))
            cut = budget < spec.tokens_per_turn and len(new) == budget and new[-1] != tokenizer.eos_token_id
            if cut:
                end_state = "timed_out"  # forced truncation: the turn was cut at the timeout
                break
            if session is not None:
                session.state("on_tools")
            if spec.tool_sleep_s:
                time.sleep(spec.tool_sleep_s)
            turns.append(TurnRow("tool", f"saved {len(text)} characters"))
            states.append(states[-1])
        segments = segments_of(versions)
        return Rollout(task.id, index, segments[0][1] if segments else policy.version, timeout_s, turns, states,
                       end_state, clock, time.perf_counter() - started, tokens, segments=segments)
