"""Rubric trees and submissions built in code for the judge tests."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from apps.judging.judge.prompts import PaperContext

PAPER = PaperContext(
    title="Tiny paper", markdown="# Tiny paper\nWe train a classifier on CIFAR-10.",
    addendum="Use the small model only.", judge_addendum="Accept any optimiser.",
)


def leaf(requirements: str, category: str = "Code Development", weight: int = 1) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "requirements": requirements, "weight": weight, "sub_tasks": [],
            "task_category": category, "finegrained_task_category": None}


def node(requirements: str, *children: dict[str, Any], weight: int = 1) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "requirements": requirements, "weight": weight, "sub_tasks": list(children),
            "task_category": None, "finegrained_task_category": None}


def small_tree() -> dict[str, Any]:
    """root > [data > (2 CD leaves), training > (CD, CE leaves), results > (RA leaf)]"""
    return node(
        "Reproduce the tiny paper",
        node("Data pipeline", leaf("The CIFAR-10 dataset loader is implemented"),
             leaf("Images are normalised with the dataset mean and std"), weight=2),
        node("Training", leaf("The classifier training loop is implemented"),
             leaf("The training script runs to completion", "Code Execution"), weight=3),
        node("Results", leaf("The accuracy table shows above 90% accuracy", "Result Analysis")),
    )


def make_submission(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text("# Reproduction\nRun reproduce.sh to train the classifier.\n")
    (root / "data.py").write_text("def load_cifar10():\n    '''CIFAR-10 dataset loader'''\n    return []\n")
    (root / "train.py").write_text("def training_loop(classifier):\n    for epoch in range(3):\n        pass\n")
    (root / "reproduce.sh").write_text("python train.py > results.csv\n")
    (root / "reproduce.log").write_text("epoch 1\nepoch 2\nepoch 3\ndone\n")
    (root / "results.csv").write_text("model,accuracy\nsmall,0.91\n")
    (root / "model.bin").write_bytes(b"\x00\x01binary")
    return root


def make_paper_with_rubric(slug: str, split: str = "train", tree: dict[str, Any] | None = None):
    """A paper with one saved rubric version (the small tree by default)."""
    from apps.papers.models import Paper
    from apps.rubrics.services.versions import create_version

    paper = Paper.objects.create(slug=slug, title=f"Paper {slug}", split=split, markdown=PAPER.markdown,
                                 addendum=PAPER.addendum, judge_addendum=PAPER.judge_addendum)
    version = create_version(paper, message="test", tree=tree or small_tree())
    return paper, version


def make_endpoint(base_url: str, name: str = "stub", **fields: Any):
    from apps.judging.models import ModelEndpoint

    values = {"backend": "openai", "base_url": base_url, "model": "stub-model", "concurrency": 4, "max_retries": 1,
              "price_input_per_m": 3.0, "price_output_per_m": 12.0}
    values.update(fields)
    return ModelEndpoint.objects.create(name=name, **values)


def stored_submission(name: str = "s1") -> str:
    """A submission folder under the data folder's submissions/, as the judge job expects."""
    from django.conf import settings

    make_submission(Path(settings.DATA_DIR) / "submissions" / name)
    return f"submissions/{name}"
