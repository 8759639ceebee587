from __future__ import annotations

import pytest

from apps.core.demo import seed_demo
from apps.papers.models import Paper
from apps.rubrics import services

pytestmark = pytest.mark.django_db


def test_demo_papers_get_an_editable_draft_equal_to_their_first_version(personas):
    seed_demo(personas["admin"])
    for paper in Paper.objects.all():
        version = paper.rubric_versions.get()
        assert services.tree_hash(services.export_draft(paper)) == version.content_hash
        assert services.tree_hash(version.tree) == version.content_hash
