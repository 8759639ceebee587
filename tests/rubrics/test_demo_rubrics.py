from __future__ import annotations

import pytest

from apps.core.demo import seed_demo
from apps.papers.models import Paper
from apps.rubrics.services.parsing import tree_hash
from apps.rubrics.services.store import export_draft

pytestmark = pytest.mark.django_db


def test_demo_papers_get_an_editable_draft_equal_to_their_first_version(personas):
    seed_demo(personas["admin"])
    for paper in Paper.objects.all():
        version = paper.rubric_versions.get()
        assert tree_hash(export_draft(paper)) == version.content_hash
        assert tree_hash(version.tree) == version.content_hash
