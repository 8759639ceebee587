"""One of everything the studio shows, built in code, with ``text`` in every free-text field.

The access matrix fills URL parameters from these objects; the XSS test builds the same world
with an attack payload as the text, so every page shows attacker-controlled strings.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings


def _tree(text: str) -> dict[str, Any]:
    def leaf(requirements: str, category: str = "Code Development") -> dict[str, Any]:
        return {"id": str(uuid.uuid4()), "requirements": requirements, "weight": 1, "sub_tasks": [],
                "task_category": category, "finegrained_task_category": None}

    return {"id": str(uuid.uuid4()), "requirements": f"Root {text}", "weight": 1, "task_category": None,
            "finegrained_task_category": None,
            "sub_tasks": [leaf(f"Leaf {text}"), leaf(f"Runs {text}", "Code Execution")]}


@dataclass
class World:
    paper: Any
    version: Any
    node: Any
    trajectory: Any
    label: Any
    endpoint: Any
    judge_run: Any
    check: Any
    job: Any
    checkpoint: Any
    token: Any
    candidate: Any
    audit_queue: Any
    dataset: Any
    artifact: Any
    annotation_queue: Any


def build_world(text: str, user) -> World:
    from apps.audit.models import AuditQueue
    from apps.core.tokens import create_token
    from apps.datasets.models import Dataset
    from apps.jobs.models import Job, JobArtifact, JobLog, JobMetric, ModelCheckpoint
    from apps.judging.models import JudgeRun, LeafGrade, ModelEndpoint, RubricCheck
    from apps.papers.models import Paper, PaperCandidate
    from apps.rubrics.services.parsing import parse_rubric_value
    from apps.rubrics.services.versions import import_rubric_tree
    from apps.trajectories import queues
    from apps.trajectories.models import AnnotationLabel, Trajectory, TurnAnnotation
    from tests.trajectories.factories import make_trajectory

    paper = Paper.objects.create(
        slug="world", title=f"Paper {text}", abstract=text, markdown=f"# {text}\n\n{text}\n\n*{text}*",
        addendum=text, judge_addendum=text, blacklist=["https://example.org/" + text[:20]], tags=[text[:30]],
    )
    import_rubric_tree(paper, parse_rubric_value(_tree(text)), user, f"v1 {text}")
    version = paper.rubric_versions.get(number=1)
    node = paper.rubric_nodes.order_by("pk").first()
    trajectory = make_trajectory(
        12, texts={i: f"turn {i} {text}" for i in range(12)}, paper=paper, title=f"Run {text}",
        model_name=text[:200], task=text[:300], review="rejected", review_reason=text,
    )
    label, _ = AnnotationLabel.objects.get_or_create(name="world-label", defaults={"description": text[:300]})
    TurnAnnotation.objects.create(trajectory=trajectory, turn_index=2, label=label, note=text, author=user)
    endpoint = ModelEndpoint.objects.create(
        name="world-endpoint", backend="openai", base_url="http://127.0.0.1:9/v1", model=text[:100],
        api_key_env="WORLD_KEY", description=text, timeout_s=1.0, max_retries=0,
    )
    job = Job.objects.create(kind="selftest", title=f"Job {text}", config={"steps": 3, "echo": text},
                             state=Job.State.FAILED, message=text[:500], error=text, result={"echo": text},
                             progress=0.5, step=1, total_steps=3, created_by=user)
    JobMetric.objects.create(job=job, step=1, name=f"loss {text}"[:100], value=1.0)
    JobLog.objects.create(job=job, text=text)
    judge_run = JudgeRun.objects.create(
        paper=paper, trajectory=trajectory, rubric_version=version, rubric_hash=version.content_hash,
        kind="model", judge_name=f"judge {text}"[:200], score=0.5, endpoint=endpoint, job=job,
    )
    for index, leaf in enumerate(n for n in version.tree["sub_tasks"]):
        LeafGrade.objects.create(run=judge_run, node_index=index + 1, node_id=leaf["id"], score=0.5,
                                 explanation=text, category=leaf["task_category"],
                                 prompt=[{"role": "user", "content": text}])
    check = RubricCheck.objects.create(paper=paper, node_id=version.tree["sub_tasks"][0]["id"],
                                       command=f"echo {text!r}", created_by=user)
    folder = Path(settings.DATA_DIR) / "checkpoints" / f"world-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    checkpoint = ModelCheckpoint.objects.create(
        job=job, name=f"ckpt {text}"[:200], path=str(folder.relative_to(settings.DATA_DIR)), base_model=text[:500],
    )
    token, _key = create_token(user, f"token {text}")
    candidate = PaperCandidate.objects.create(title=f"Candidate {text}"[:500], key="world-candidate", abstract=text,
                                              authors=text, note=text, source_format="csv")
    audit_queue = AuditQueue.objects.create(name=f"Queue {text}"[:200], paper=paper, base_run=judge_run,
                                            runs=[judge_run.pk], submission_key="world", created_by=user)
    dataset = Dataset.objects.create(name=f"dataset {text}"[:200], notes=text, origin_job=job, created_by=user)
    dataset.trajectories.add(trajectory)
    # A file the job offers for download, as a dataset export's zip is.
    exported = Path(settings.DATA_DIR) / "exports" / f"job-{job.pk}" / "world.zip"
    exported.parent.mkdir(parents=True, exist_ok=True)
    exported.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip
    artifact = JobArtifact.objects.create(job=job, name=f"export {text}"[:200], kind="dataset", size_bytes=22,
                                          path=str(exported.relative_to(settings.DATA_DIR)))
    annotation_queue = queues.create_queue(name=f"Queue {text}", unit="turns", instructions=text, user=user,
                                           trajectories=Trajectory.objects.filter(pk=trajectory.pk))
    first = queues.next_item(annotation_queue, user)
    queues.label_item(annotation_queue, first.pk, user, label=label.name, note=text)
    return World(paper, version, node, trajectory, label, endpoint, judge_run, check, job, checkpoint, token,
                 candidate, audit_queue, dataset, artifact, annotation_queue)
