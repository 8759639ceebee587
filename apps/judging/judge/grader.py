"""Grade a rubric tree leaf by leaf against a submission (no Django: the engine, the JudgeEval
command and the benchmark all call ``grade_tree``).

Leaves are graded concurrently by a thread pool as wide as the endpoint's concurrency limit;
results come back to the calling thread (``on_result``), so progress reporting and database
writes stay on one thread. A leaf whose answer cannot be used after ``parse_retries`` extra
calls, or whose endpoint fails after the client's own retries, is INVALID with the reason: it
scores 0 in the aggregate (as in PaperBench) but is never reported as a plain 0, and every
ancestor reports how many invalid leaves it hides.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from apps.judging.judge.parsing import ParseError, parse_judgement
from apps.judging.judge.prompts import CODE_DEVELOPMENT, PaperContext, build_messages, prior_nodes
from apps.judging.judge.ranking import FileIndex
from apps.judging.judge.submission import Submission
from apps.judging.llm.client import Chat
from apps.judging.llm.records import LLMError
from apps.rubrics.paperbench import FlatNode, leaf_mask, unflatten
from apps.rubrics.scoring import ScoringPlan


@dataclass(frozen=True, slots=True)
class JudgeSettings:
    code_only: bool = False  # grade Code Development leaves only; score the tree reduced to them
    max_files: int = 10  # files read per leaf, best-ranked first
    max_file_chars: int = 30_000  # per file
    max_files_chars: int = 120_000  # all files of one leaf together
    max_paper_chars: int = 300_000
    max_log_chars: int = 60_000  # reproduce.log: head and tail within this
    max_prior_nodes: int | None = None
    parse_retries: int = 2  # extra calls when an answer has no usable verdict
    concurrency: int | None = None  # default: the endpoint's limit
    request_params: dict[str, Any] = field(default_factory=dict)
    # Leaf index -> programmatic check; those leaves are graded by their command alone.
    checks: dict[int, LeafCheck] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class LeafCheck:
    command: str
    timeout_s: float = 60.0


class CheckOutcome(Protocol):
    passed: bool
    output: str
    error: str
    explanation: str


# Runs a check's command against a submission folder, confined: the worker's sandboxes
# (worker/judge/checks.py) supply it; the judge protocol itself runs nothing.
CheckRunner = Callable[[str, Path, float], CheckOutcome]


@dataclass(slots=True)
class LeafResult:
    index: int
    node_id: Any
    category: str | None
    valid: bool
    score: int | None  # None when invalid: an ungradable leaf is not a 0
    explanation: str = ""
    invalid_reason: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    response: str = ""  # the last answer (earlier unusable ones are in ``responses``)
    responses: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0  # model time summed over the leaf's calls
    errors: list[str] = field(default_factory=list)


@dataclass(slots=True)
class JudgeOutcome:
    nodes: list[FlatNode]
    results: dict[int, LeafResult]
    scores: list[float]
    invalid_below: list[int]  # per node: invalid leaves in its subtree
    graded_below: list[int]  # per node: graded leaves in its subtree
    category: str | None
    duration_s: float = 0.0

    @property
    def score(self) -> float:
        return self.scores[0] if self.scores else 0.0

    @property
    def n_invalid(self) -> int:
        return sum(1 for r in self.results.values() if not r.valid)

    def totals(self) -> dict[str, Any]:
        rs = self.results.values()
        return {
            "leaves": len(self.results),
            "invalid": self.n_invalid,
            "calls": sum(r.calls for r in rs),
            "prompt_tokens": sum(r.prompt_tokens for r in rs),
            "completion_tokens": sum(r.completion_tokens for r in rs),
            "cost_usd": sum(r.cost_usd for r in rs),
            "score": self.score,
            "duration_s": self.duration_s,
        }


class _Prepared:
    """What every leaf shares: truncated paper, reproduce files, the file index."""

    def __init__(self, paper: PaperContext, submission: Submission, settings: JudgeSettings,
                 run_check: CheckRunner | None = None) -> None:
        self.run_check = run_check
        markdown = paper.markdown
        if len(markdown) > settings.max_paper_chars:
            markdown = markdown[: settings.max_paper_chars] + "\n[... paper truncated ...]"
        self.paper = dataclasses.replace(paper, markdown=markdown)
        self.submission = submission
        self.reproduce_sh = submission.read_text("reproduce.sh", settings.max_file_chars)
        self.reproduce_log = submission.read_head_tail("reproduce.log", settings.max_log_chars)
        self.index = FileIndex(submission, settings.max_file_chars)


def _files_text(prep: _Prepared, requirement: str, category: str | None, s: JudgeSettings) -> tuple[str, list[str]]:
    ranked = prep.index.rank(requirement, prep.submission.candidates(category))
    parts: list[str] = []
    used: list[str] = []
    budget = s.max_files_chars
    for item in ranked:
        if len(used) >= s.max_files or budget <= 0:
            break
        text = prep.index.text(item.path, min(s.max_file_chars, budget))
        if text is None:
            continue
        block = f"<file path={item.path!r}>\n{text}\n</file>"
        parts.append(block)
        used.append(item.path)
        budget -= len(text)
    return "\n\n".join(parts) if parts else "(no relevant files)", used


def grade_check(index: int, node: FlatNode, check: LeafCheck, prep: _Prepared) -> LeafResult:
    """A programmatic leaf: its command decides, no model is asked."""
    result = LeafResult(index=index, node_id=node.node_id, category=node.task_category, valid=False, score=None)
    result.messages = [{"role": "check", "content": check.command}]
    if prep.run_check is None:
        result.invalid_reason = "programmatic checks run only where a sandbox can confine them (a worker)"
        return result
    outcome = prep.run_check(check.command, prep.submission.root, check.timeout_s)
    result.response = outcome.output
    if outcome.error:
        result.invalid_reason = outcome.error
        return result
    result.valid = True
    result.score = 1 if outcome.passed else 0
    result.explanation = outcome.explanation
    return result


def grade_leaf(
    index: int, nodes: Sequence[FlatNode], children: Sequence[Sequence[int]], prep: _Prepared, client: Chat,
    settings: JudgeSettings,
) -> LeafResult:
    node = nodes[index]
    check = settings.checks.get(index)
    if check is not None:
        return grade_check(index, node, check, prep)
    requirement = str(node.requirements or "")
    category = node.task_category
    result = LeafResult(index=index, node_id=node.node_id, category=category, valid=False, score=None)
    try:
        files_text, result.files = _files_text(prep, requirement, category, settings)
        preceding = [str(nodes[i].requirements or "") for i in prior_nodes(nodes, index, children, settings.max_prior_nodes)]
        messages = build_messages(
            paper=prep.paper, requirement=requirement, category=category, preceding=preceding,
            files_text=files_text, reproduce_sh=prep.reproduce_sh, reproduce_log=prep.reproduce_log,
            code_only=settings.code_only,
        )
    except Exception as exc:  # an unreadable submission must not look like a failed criterion
        result.invalid_reason = f"could not build the prompt: {type(exc).__name__}: {exc}"
        return result
    result.messages = messages
    problem = ""
    for _ in range(settings.parse_retries + 1):
        try:
            answer = client.chat(messages, **settings.request_params)
        except LLMError as exc:
            if exc.record is not None:
                result.errors.extend(exc.record.errors)
            result.invalid_reason = f"the endpoint failed: {exc}"
            return result
        record = answer.record
        result.calls += 1
        result.prompt_tokens += record.prompt_tokens
        result.completion_tokens += record.completion_tokens
        result.cost_usd += record.cost_usd
        result.latency_s += record.latency_s
        result.errors.extend(record.errors)
        result.response = answer.text
        result.responses.append(answer.text)
        try:
            verdict = parse_judgement(answer.text)
        except ParseError as exc:
            problem = str(exc)
            result.errors.append(f"unusable answer: {problem}")
            continue
        if not verdict.valid_score:
            result.explanation = verdict.explanation
            result.invalid_reason = f"the judge could not grade this criterion: {verdict.explanation[:500]}"
            return result
        result.valid = True
        result.score = verdict.score
        result.explanation = verdict.explanation
        return result
    result.invalid_reason = f"no usable verdict after {result.calls} answer(s): {problem}"
    return result


def aggregate(nodes: Sequence[FlatNode], results: dict[int, LeafResult], category: str | None,
              plan: ScoringPlan | None = None) -> tuple[list[float], list[int], list[int]]:
    """Per-node scores (invalid leaves count 0), invalid and graded leaf counts per subtree."""
    plan = plan or ScoringPlan.from_nodes(nodes)
    scores = plan.score({i: float(r.score) if r.valid and r.score is not None else 0.0 for i, r in results.items()},
                        category)
    invalid = [0] * len(nodes)
    graded = [0] * len(nodes)
    for i, r in results.items():
        j: int | None = i
        while j is not None:
            graded[j] += 1
            if not r.valid:
                invalid[j] += 1
            j = nodes[j].parent
    return scores, invalid, graded


def grade_tree(
    nodes: Sequence[FlatNode],
    paper: PaperContext,
    submission: Submission,
    client: Chat,
    settings: JudgeSettings | None = None,
    *,
    on_result: Callable[[LeafResult, int, int], None] | None = None,
    run_check: CheckRunner | None = None,
) -> JudgeOutcome:
    """Grade every leaf (Code Development ones only in code-only mode) and aggregate.

    ``on_result(result, done, total)`` runs in the calling thread after each leaf; an exception
    it raises (e.g. a cancelled job) stops the run: queued leaves are dropped, running ones finish.
    ``run_check`` decides the leaves that have a programmatic check (``settings.checks``).
    """
    settings = settings or JudgeSettings()
    started = time.monotonic()
    nodes = list(nodes)
    plan = ScoringPlan.from_nodes(nodes)
    is_leaf = leaf_mask(nodes)
    category = CODE_DEVELOPMENT if settings.code_only else None
    leaves = [i for i in range(len(nodes)) if is_leaf[i] and (category is None or nodes[i].task_category == category)]
    children: list[list[int]] = [[] for _ in nodes]
    for n in nodes:
        if n.parent is not None:
            children[n.parent].append(n.index)
    prep = _Prepared(paper, submission, settings, run_check)
    results: dict[int, LeafResult] = {}
    width = max(1, min(settings.concurrency or client.config.concurrency, len(leaves) or 1))
    pool = ThreadPoolExecutor(max_workers=width, thread_name_prefix="judge-leaf")
    try:
        # Submit only as many leaves as there are threads, topping up as they finish: a stop
        # request then drops the rest without a queue of thousands of futures to cancel.
        todo = iter(leaves)
        running: set[Future[LeafResult]] = set()
        for i in todo:
            running.add(pool.submit(grade_leaf, i, nodes, children, prep, client, settings))
            if len(running) >= width * 2:
                break
        while running:
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                result = future.result()
                results[result.index] = result
                if on_result is not None:
                    on_result(result, len(results), len(leaves))
                nxt = next(todo, None)
                if nxt is not None:
                    running.add(pool.submit(grade_leaf, nxt, nodes, children, prep, client, settings))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    scores, invalid, graded = aggregate(nodes, results, category, plan)
    return JudgeOutcome(nodes, results, scores, invalid, graded, category, time.monotonic() - started)


def graded_tree(outcome: JudgeOutcome, *, inner_validity: bool = True) -> dict[str, Any]:
    """The PaperBench graded-tree JSON of a run: score, valid_score, explanation, judge_metadata
    on every node. Unlike PaperBench (its issue #144) an inner node is valid only when no leaf
    below it is invalid, and its metadata says how many are. ``inner_validity=False`` marks
    inner nodes valid as PaperBench does (for JudgeEval, which skips invalid subtrees whole)."""
    is_leaf = leaf_mask(outcome.nodes)
    out: list[FlatNode] = []
    for i, node in enumerate(outcome.nodes):
        r = outcome.results.get(i)
        if is_leaf[i] and r is not None:
            meta: dict[str, Any] = {
                "invalid_reason": r.invalid_reason or None, "files": r.files, "calls": r.calls,
                "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens, "cost_usd": r.cost_usd,
            }
            out.append(dataclasses.replace(
                node, score=float(r.score) if r.valid and r.score is not None else 0.0, valid_score=r.valid,
                explanation=r.explanation or r.invalid_reason, judge_metadata=meta,
            ))
        elif is_leaf[i]:
            out.append(dataclasses.replace(
                node, score=0.0, valid_score=True, explanation="not graded in this run (category left out)",
                judge_metadata={"graded": False},
            ))
        else:
            out.append(dataclasses.replace(
                node, score=outcome.scores[i], valid_score=outcome.invalid_below[i] == 0 or not inner_validity,
                explanation="",
                judge_metadata={"invalid_leaves": outcome.invalid_below[i], "graded_leaves": outcome.graded_below[i]},
            ))
    return unflatten(out)
