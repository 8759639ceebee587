"""Drafting a PaperBench rubric tree with a model: the prompt, reading the answer, the feedback.

Pure Python (no Django). The model's answer is untrusted text: the JSON tree is cut out of it,
light normalisation fills what a model routinely leaves out (uuid ids, ``task_category: null``
on inner nodes), and then the project's own validator decides. Anything it still refuses goes
back to the model as a numbered list of problems, so the next attempt can fix exactly those.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apps.rubrics.paperbench import RubricFormatError, flatten, leaf_mask, load_json_bytes
from apps.rubrics.validation import FINEGRAINED_TASK_CATEGORIES, TASK_CATEGORIES, Problem, errors, validate_json

MAX_PROBLEMS_FED_BACK = 20
CODE_SUFFIXES = frozenset({".py", ".sh", ".md", ".txt", ".yaml", ".yml", ".toml", ".json", ".cfg", ".ipynb", ".r",
                           ".jl", ".c", ".cpp", ".h", ".rs", ".go", ".js", ".ts"})
SKIPPED_DIRS = frozenset({".git", "__pycache__", "node_modules", ".venv", "venv", "wandb", ".github"})

SYSTEM_PROMPT = f"""You write grading rubrics for attempts to reproduce machine learning papers, in \
OpenAI PaperBench's rubric-tree format.

A node is a JSON object with keys:
- "id": a unique string (a uuid4),
- "requirements": what must be true, as one concrete, checkable sentence,
- "weight": a positive integer (relative importance among its siblings),
- "sub_tasks": a list of child nodes (an empty list for a leaf),
- "task_category": on leaves one of {", ".join(repr(c) for c in TASK_CATEGORIES)}; null on inner nodes,
- "finegrained_task_category": on leaves, optionally one of {", ".join(repr(c) for c in FINEGRAINED_TASK_CATEGORIES)}.

Code Development leaves ask whether code implementing something exists; Code Execution leaves ask \
whether running reproduce.sh actually does it; Result Analysis leaves ask whether the outputs agree \
with a specific result of the paper. The root's requirements summarise the whole reproduction. \
Cover the paper's main contributions and experiments; each leaf checks one thing a grader can \
decide from the code and its outputs alone."""


@dataclass(frozen=True, slots=True)
class DraftRequest:
    title: str
    markdown: str
    code_files: tuple[tuple[str, str], ...] = ()
    target_leaves: int = 30
    max_paper_chars: int = 120_000


def read_code_folder(folder: Path, max_files: int = 40, max_chars: int = 60_000) -> tuple[tuple[str, str], ...]:
    """The official code's text files (path relative to the folder, content), smallest first,
    until ``max_chars``: enough for the model to see what the experiments run, never the whole repo."""
    folder = folder.resolve()
    found: list[tuple[int, str, Path]] = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if any(part in SKIPPED_DIRS for part in rel.parts) or path.is_symlink() or not path.is_file():
            continue
        if path.suffix.lower() in CODE_SUFFIXES:
            found.append((path.stat().st_size, str(rel), path))
    files: list[tuple[str, str]] = []
    budget = max_chars
    for _size, rel_name, path in sorted(found)[: max_files * 4]:
        if len(files) >= max_files or budget <= 0:
            break
        text = path.read_text(encoding="utf-8", errors="replace")[:budget]
        files.append((rel_name, text))
        budget -= len(text)
    return tuple(files)


def build_messages(request: DraftRequest) -> list[dict[str, str]]:
    paper = request.markdown
    if len(paper) > request.max_paper_chars:
        paper = paper[: request.max_paper_chars] + f"\n\n[... {len(request.markdown) - request.max_paper_chars:,} characters cut]"
    parts = [f"# The paper: {request.title}\n\n{paper}"]
    if request.code_files:
        listing = "\n\n".join(f"## {name}\n```\n{text}\n```" for name, text in request.code_files)
        parts.append(f"# The authors' official code (use it to see what the experiments really run)\n\n{listing}")
    parts.append(
        f"Write the rubric tree for reproducing this paper, with about {request.target_leaves} leaves and a depth "
        "of 3 to 5. Answer with the JSON tree only, in one ```json block."
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n\n".join(parts)}]


_FENCE = re.compile(r"```(?:json)?\s*\n(.*?)```", re.S)


def extract_json(text: str) -> str | None:
    """The JSON object in a model answer: the last fenced block that holds one, else the span
    from the first ``{`` to the last ``}``."""
    for block in reversed(_FENCE.findall(text)):
        if block.strip().startswith("{"):
            return block.strip()
    start, end = text.find("{"), text.rfind("}")
    return text[start:end + 1] if 0 <= start < end else None


def normalise(tree: Any) -> Any:
    """Fill what models routinely omit, never change what they wrote: a missing id becomes a
    uuid4, a missing ``sub_tasks`` an empty list, inner nodes get ``task_category: null``."""
    if not isinstance(tree, dict):
        return tree
    stack = [tree]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        if not node.get("id"):
            node["id"] = str(uuid.uuid4())
        node.setdefault("sub_tasks", [])
        children = node["sub_tasks"]
        if isinstance(children, list) and children:
            node.setdefault("task_category", None)
            stack.extend(children)
    return tree


@dataclass(slots=True)
class DraftOutcome:
    tree: dict[str, Any] | None
    problems: list[str]
    warnings: list[Problem]

    @property
    def ok(self) -> bool:
        return self.tree is not None


def read_answer(text: str) -> DraftOutcome:
    """The validated tree in a model answer, or the problems that stop it (human-readable)."""
    raw = extract_json(text)
    if raw is None:
        return DraftOutcome(None, ["The answer holds no JSON object."], [])
    try:
        tree = load_json_bytes(raw.encode())
    except RubricFormatError as exc:
        return DraftOutcome(None, [f"The JSON could not be read: {exc.message}"], [])
    if not isinstance(tree, dict):
        return DraftOutcome(None, ["The top level must be one node object (the root)."], [])
    tree = normalise(tree)
    problems = validate_json(tree)
    bad = errors(problems)
    if bad:
        return DraftOutcome(None, [f"{p.path}: {p.message}" for p in bad], [])
    if sum(leaf_mask(flatten(tree))) < 2:
        return DraftOutcome(None, ["The tree needs at least two leaves: split the root into checkable parts."], [])
    return DraftOutcome(tree, [], [p for p in problems if p.level == "warning"])


def feedback(problems: list[str]) -> str:
    """The message that asks the model to fix its tree, listing what the validator refused."""
    shown = problems[:MAX_PROBLEMS_FED_BACK]
    more = f"\n(and {len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
    listed = "\n".join(f"{i}. {p}" for i, p in enumerate(shown, start=1))
    return (f"The rubric tree was refused by the validator:\n{listed}{more}\n\n"
            "Fix these problems and answer with the whole corrected JSON tree in one ```json block.")


def tree_summary(tree: dict[str, Any]) -> dict[str, Any]:
    nodes = flatten(tree)
    is_leaf = leaf_mask(nodes)
    categories: dict[str, int] = {}
    for node, leaf in zip(nodes, is_leaf, strict=True):
        if leaf:
            categories[node.task_category or "(none)"] = categories.get(node.task_category or "(none)", 0) + 1
    return {"nodes": len(nodes), "leaves": sum(is_leaf), "categories": categories,
            "bytes": len(json.dumps(tree))}
