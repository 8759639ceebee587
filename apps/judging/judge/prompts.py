"""The judge's prompt for one leaf, following PaperBench's protocol (pure Python).

Message order as in PaperBench's SimpleJudge: instructions, the paper, the addendum (paper
addendum + judge addendum), the most relevant files, reproduce.sh (and reproduce.log for Code
Execution and Result Analysis leaves; neither in Code-Development-only mode), then the criterion
with its preceding criteria and a category-specific question, then the answer format. The wording
is ours; the structure and the information given are PaperBench's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from apps.rubrics.paperbench import FlatNode

CODE_DEVELOPMENT = "Code Development"
CODE_EXECUTION = "Code Execution"
RESULT_ANALYSIS = "Result Analysis"

CATEGORY_QUESTIONS = {
    CODE_DEVELOPMENT: (
        "Does the submission contain code that correctly implements this? A description, plan or "
        "instructions are not enough: look for actual code that does it."
    ),
    CODE_EXECUTION: "Does running reproduce.sh actually carry this out successfully (see reproduce.log)?",
    RESULT_ANALYSIS: "Do the outputs produced by running reproduce.sh give evidence that agrees with these results?",
}
DEFAULT_QUESTION = "Does the submission satisfy this criterion?"

SYSTEM_PROMPT = """You are an expert reviewer grading an attempt to reproduce a machine learning \
research paper. The attempt (the submission) is a folder of code, usually with a reproduce.sh \
script that runs the experiments and, if it was run, the reproduce.log it wrote.

The paper's rubric splits the reproduction into many small criteria. You grade exactly one of \
them, judging only from what you are shown: the paper, its addendum, the most relevant files of \
the submission, reproduce.sh and reproduce.log. Be strict and concrete: a criterion is met (1) \
only when the evidence shows it is; otherwise it is not met (0). Do not grade the other criteria."""

GRADING_PROMPT = """Now grade the criterion. Write three sections:

# Expectations
What a correct reproduction would contain or show for this criterion, specifically.

# Reality
What the submission actually contains or shows for it: name the files, functions and log lines you \
relied on.

# Score
1 if the criterion is met, 0 if it is not.

End your answer with this JSON object on its own lines:
{"valid_score": true, "score": 0 or 1, "explanation": "one or two sentences"}
Set "valid_score" to false only if the criterion cannot be judged at all from what you were given."""


@dataclass(frozen=True, slots=True)
class PaperContext:
    title: str
    markdown: str
    addendum: str = ""
    judge_addendum: str = ""

    def joined_addendum(self) -> str:
        text = f"{self.addendum}\n{self.judge_addendum}".strip()
        return text or "(no addendum given)"


def prior_nodes(nodes: Sequence[FlatNode], index: int, children: Sequence[Sequence[int]],
                limit: int | None = None) -> list[int]:
    """PaperBench's preceding criteria: ancestors, and preceding siblings of the leaf and of
    each ancestor, root first, the leaf itself excluded; the last ``limit`` of them if given."""
    path = []
    i: int | None = index
    while i is not None:
        path.append(i)
        i = nodes[i].parent
    path.reverse()
    if len(path) == 1:
        return []
    found = [path[0]]
    for depth in range(1, len(path)):
        siblings = children[path[depth - 1]]
        found.extend(siblings[: siblings.index(path[depth]) + 1])
    found.pop()  # the leaf itself
    if limit is not None:
        found = found[-limit:] if limit > 0 else []
    return found


def criterion_message(requirement: str, category: str | None, preceding: Sequence[str]) -> str:
    lines = "".join(f" -> {text}\n" for text in preceding)
    return (
        "For context, these criteria come before the one you grade in the rubric (its ancestors and "
        f"the siblings before it):\n<preceding_criteria>\n{lines}</preceding_criteria>\n\n"
        f"The criterion you are grading:\n<criterion>\n{requirement}\n</criterion>\n\n"
        f"Its category: {category or 'none'}.\n{CATEGORY_QUESTIONS.get(category or '', DEFAULT_QUESTION)}"
    )


def build_messages(
    *,
    paper: PaperContext,
    requirement: str,
    category: str | None,
    preceding: Sequence[str],
    files_text: str,
    reproduce_sh: str | None,
    reproduce_log: str | None,
    code_only: bool,
) -> list[dict[str, Any]]:
    if category == RESULT_ANALYSIS:
        files_intro = "The most relevant docs, and the outputs written while reproduce.sh ran, concatenated"
    else:
        files_intro = "The most relevant files of the submission, concatenated"
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"The paper:\n<paper>\n{paper.markdown}\n</paper>"},
        {
            "role": "user",
            "content": "The addendum, which clarifies the paper and how to judge its reproduction:\n"
            f"<addendum>\n{paper.joined_addendum()}\n</addendum>",
        },
        {"role": "user", "content": f"{files_intro}:\n<files>\n{files_text}\n</files>"},
    ]
    if not code_only:
        messages.append({
            "role": "user",
            "content": f"The submission's reproduce.sh, if any:\n<reproduce.sh>\n{reproduce_sh or '(none)'}\n</reproduce.sh>",
        })
        if category != CODE_DEVELOPMENT:
            messages.append({
                "role": "user",
                "content": "The reproduce.log written by running reproduce.sh, if any:\n"
                f"<reproduce.log>\n{reproduce_log or '(none)'}\n</reproduce.log>",
            })
    messages.append({"role": "user", "content": criterion_message(requirement, category, preceding)})
    messages.append({"role": "user", "content": GRADING_PROMPT})
    return messages
