"""The RL job page shows the eval scores (every k iterations) next to the training reward."""

from __future__ import annotations

import pytest

from apps.jobs.models import Job


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_stage_timeline_and_the_reward_plot_show_eval_scores(page, live_server, personas, browser_login):
    from apps.jobs.models import JobMetric

    job = Job.objects.create(kind="rl", state=Job.State.RUNNING, title="rl with eval",
                             config={"task_source": "toy", "stages": "20m:2, 40m:3", "eval_every": 1},
                             created_by=personas["operator"])
    rows = []
    for step, (stage, reward, evaluated) in enumerate([(1, 0.2, 0.1), (1, 0.4, 0.25), (2, 0.5, 0.3)], start=1):
        for name, value in {"stage": stage, "reward": reward, "q_mean": reward, "eval_score": evaluated}.items():
            rows.append(JobMetric(job=job, step=step, name=name, value=value))
    JobMetric.objects.bulk_create(rows)
    browser_login(personas["viewer"])
    page.goto(f"{live_server.url}/jobs/{job.pk}/")
    page.wait_for_function("document.querySelectorAll('#rl-timeline li.done').length === 1")
    stages = page.locator("#rl-timeline li")
    assert stages.nth(0).inner_text() == "Stage 1 · timeout 20m · 2/2 iterations · eval 0.250"
    assert stages.nth(1).inner_text() == "Stage 2 · timeout 40m · 1/3 iterations · eval 0.300"
    assert "reward 0.500" in page.locator("#rl-summary").inner_text()
    assert "eval 0.300 at iteration 3" in page.locator("#rl-summary").inner_text()
    # the eval score is a trace of its own on the reward panel
    page.wait_for_function("[...document.querySelectorAll('#rl-plots .legendtext')].some(t => t.textContent === 'eval_score')")
