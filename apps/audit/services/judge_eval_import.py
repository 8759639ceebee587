"""JudgeEval import: a PaperBench human-graded tree file as a human grading of a paper."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from apps.audit.matching import match_leaves
from apps.audit.services.grading import rescore
from apps.audit.services.trees import Tree, tree_of
from apps.judging.models import JudgeRun, LeafGrade
from apps.papers.models import Paper
from apps.rubrics.models import RubricVersion
from apps.rubrics.paperbench import RubricFormatError, flatten, load_json_bytes
from apps.rubrics.scoring import ScoringPlan
from apps.rubrics.services.errors import RubricRefused
from apps.rubrics.services.parsing import parse_rubric_value
from apps.rubrics.services.versions import import_rubric_tree, latest_version

GRADED_KEYS = ("score", "valid_score", "explanation", "judge_metadata")


@dataclass(slots=True)
class ImportResult:
    run: JudgeRun
    version: RubricVersion
    created_version: bool
    match: dict[str, Any]
    unmatched: list[dict[str, Any]]


def _strip_grades(tree: dict[str, Any]) -> dict[str, Any]:
    return {k: ([_strip_grades(c) for c in v] if k == "sub_tasks" and isinstance(v, list) else v)
            for k, v in tree.items() if k not in GRADED_KEYS}


def _check_size(size: int) -> None:
    limit = int(settings.KLONG_MAX_UPLOAD_BYTES)
    if size > limit:
        raise ValidationError(f"The file is larger than {limit} bytes (KLONG_MAX_UPLOAD_BYTES).")


def read_upload(upload) -> bytes:
    """An uploaded file's bytes, refused before reading when it is over the upload limit."""
    _check_size(getattr(upload, "size", 0) or 0)
    return upload.read()


@transaction.atomic
def import_judge_eval(*, paper: Paper, data: bytes, filename: str, user) -> ImportResult:
    """A PaperBench human-graded tree (judge_eval JSON) as a human grading of ``paper``.

    Leaves land on the paper's latest rubric version, matched by id and then by requirement
    text; a paper without a rubric gets the file's tree (grades stripped) as version 1.
    """
    _check_size(len(data))
    try:
        graded = load_json_bytes(data)
        source = flatten(graded)
    except RubricFormatError as exc:
        raise ValidationError(f"Not a PaperBench graded tree: {exc.message}") from None
    source_tree = Tree(source, ScoringPlan.from_nodes(source)) if source else None
    if source_tree is None or not source_tree.leaves:
        raise ValidationError("The file has no leaves.")
    bad = [source[i] for i in source_tree.leaves if source[i].score not in (0, 1) or isinstance(source[i].score, bool)]
    if bad:
        raise ValidationError(f"{len(bad)} leaves have no human score of 0 or 1 (e.g. node {bad[0].node_id}).")
    version = latest_version(paper)
    created = False
    if version is None:
        try:
            version = import_rubric_tree(paper, parse_rubric_value(_strip_grades(graded)), user,
                                         f"Rubric from JudgeEval file {filename}"[:500])
        except RubricRefused as exc:
            raise ValidationError(f"The file's tree is not a valid rubric: {exc}") from None
        created = True
    target = tree_of(version)
    match = match_leaves(target.nodes, source)
    if not match.pairs:
        raise ValidationError(f"No leaf of the file matches a leaf of {paper.slug} v{version.number} by id or text.")
    stem = PurePath(filename).name.removesuffix(".json")
    run = JudgeRun.objects.create(
        paper=paper, rubric_version=version, rubric_hash=version.content_hash, kind=JudgeRun.Kind.HUMAN,
        judge_name=f"JudgeEval human: {stem}"[:200], split=paper.split, submission=f"judge_eval:{stem}"[:1000],
        settings={"imported_from": filename[:300], "imported_by": user.get_username() if user else "",
                  "match": match.summary()},
    )
    now = timezone.now()
    LeafGrade.objects.bulk_create([
        LeafGrade(run=run, node_index=t, node_id=str(target.nodes[t].node_id)[:100],
                  score=float(source[s].score), valid_score=source[s].valid_score is not False,
                  explanation=str(source[s].explanation or ""), category=str(target.nodes[t].task_category or "")[:40],
                  graded_at=now)
        for s, t in sorted(match.pairs.items(), key=lambda kv: kv[1])
    ], batch_size=500)
    rescore(run, target)
    run.refresh_from_db()
    unmatched = [{"index": i, "id": str(source[i].node_id), "requirements": str(source[i].requirements)[:300]}
                 for i in match.unmatched_source]
    return ImportResult(run, version, created, match.summary(), unmatched)
