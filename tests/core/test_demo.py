from __future__ import annotations

import pytest
from django.core.management import call_command

from apps.core.demo import seed_demo
from apps.jobs.models import Job
from apps.judging.models import JudgeRun
from apps.papers.models import Paper
from apps.rubrics.paperbench import flatten
from apps.rubrics.scoring import score_tree
from apps.trajectories.models import Trajectory, Turn

pytestmark = pytest.mark.django_db


def test_demo_has_papers_with_rubric_trees(personas):
    seed_demo(personas["admin"])
    papers = Paper.objects.all()
    assert papers.count() == 3
    for paper in papers:
        version = paper.rubric_versions.get()
        assert version.leaf_count >= 10 and version.node_count == len(flatten(version.tree))


def test_demo_trajectories_have_hundreds_of_turns_all_stored(personas):
    seed_demo(personas["admin"])
    lengths = list(Trajectory.objects.values_list("turn_count", flat=True))
    assert len(lengths) == 9 and min(lengths) >= 300
    assert Turn.objects.count() == sum(lengths)


def test_demo_judge_scores_follow_from_their_leaf_grades(personas):
    seed_demo(personas["admin"])
    run = JudgeRun.objects.filter(kind=JudgeRun.Kind.HUMAN).first()
    nodes = flatten(run.rubric_version.tree)
    leaf_scores = {g.node_index: g.score for g in run.grades.all()}
    assert run.score == pytest.approx(score_tree(nodes, leaf_scores)[0])
    assert run.rubric_hash == run.rubric_version.content_hash
    # Stored like real runs: leaf counts and node scores (the run list and pages read them).
    for stored in JudgeRun.objects.all():
        assert stored.n_leaves == stored.grades.count() > 0
        assert len(stored.node_scores["scores"]) == len(flatten(stored.rubric_version.tree))
    # A grader's own notes are theirs, not the judge's wording.
    assert not run.grades.filter(explanation__startswith="Expectations").exists()


def test_demo_has_a_finished_job_with_a_loss_curve(personas, client_for):
    seed_demo(personas["admin"])
    job = Job.objects.get(kind="sft", state=Job.State.SUCCEEDED)
    assert job.metrics.filter(name="loss").count() == 400
    response = client_for("viewer").get(f"/jobs/{job.pk}/")
    assert response.status_code == 200 and len(response.context["metrics"]["loss"]["x"]) == 400


def test_demo_has_an_rl_job_whose_stages_fill_the_timeline_and_a_distilled_dataset(personas, client_for):
    from apps.core.demo import DEMO_RL_STAGES
    from apps.datasets.models import Dataset

    seed_demo(personas["admin"])
    job = Job.objects.get(kind="rl")
    iterations = sum(n for _hours, n in DEMO_RL_STAGES)
    stages = list(job.metrics.filter(name="stage").order_by("step").values_list("value", flat=True))
    assert len(stages) == iterations and stages == sorted(stages) and stages[-1] == len(DEMO_RL_STAGES)
    page = client_for("viewer").get(f"/jobs/{job.pk}/").content.decode()
    assert 'id="rl-panel"' in page and 'data-stages="2h:12, 4h:10, 6h:8"' in page
    dataset = Dataset.objects.get(name="demo-distilled")
    assert dataset.trajectories.count() == Trajectory.objects.filter(final_score__gte=0.5).count() > 0


def test_seed_demo_command_runs_once(capsys):
    call_command("seed_demo")
    call_command("seed_demo")
    assert Paper.objects.count() == 3
    assert "already present" in capsys.readouterr().out
