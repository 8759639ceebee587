"""The job page in Chromium: charts a W&B user can read (a panel per metric, log scale, smoothing,
other runs overlaid with the settings that differ), and a page that follows the job to its end
without a reload (buttons, the time left, the kind's panel, a socket that stays open)."""

from __future__ import annotations

import math
import re
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from apps.jobs.models import Job, JobMetric
from apps.jobs.progress import Progress, set_state
from tests.factories import PASSWORD
from tests.hardening.conftest import daphne_url  # noqa: F401  (real WebSockets: a fixture used below)
from tests.trajectories.factories import make_trajectory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PANELS = "() => [...document.querySelectorAll('#job-metrics figcaption')].map((c) => c.textContent)"


def traces(page, group: str) -> list[dict]:
    """The plotted traces of one panel: name and y values."""
    return page.evaluate(
        """(group) => [...document.querySelector(`#job-metrics [data-group="${group}"] .metric-plot`).data]
            .map((t) => ({name: t.name, y: Array.from(t.y), shown: t.showlegend !== false}))""", group)


def finished_sft(title: str, config: dict, loss_scale: float = 1.0) -> Job:
    job = Job.objects.create(kind="sft", title=title, state=Job.State.SUCCEEDED, config=config, progress=1.0)
    rows = []
    for step in range(1, 41):
        noise = 0.3 if step % 2 else -0.3
        rows += [JobMetric(job=job, step=step, name="loss", value=loss_scale * (0.5 + 2 * math.exp(-step / 10)) + noise),
                 JobMetric(job=job, step=step, name="tokens_per_s", value=2400.0 + step),
                 JobMetric(job=job, step=step, name="advantage_min", value=-1.0),
                 JobMetric(job=job, step=step, name="advantage_max", value=1.0)]
    JobMetric.objects.bulk_create(rows)
    return job


def test_each_metric_gets_its_own_panel_with_log_scale_and_smoothing(page, live_server, personas, browser_login):
    job = finished_sft("run A", {"learning_rate": 1e-5})
    browser_login(personas["viewer"])
    page.goto(f"{live_server.url}/jobs/{job.pk}/")
    page.wait_for_function(f"() => ({PANELS})().length === 3")
    assert page.evaluate(PANELS) == ["advantage", "loss", "tokens_per_s"]
    # The loss is read on its own axis, not flattened under the tokens per second.
    top = page.evaluate("() => document.querySelector('[data-group=loss] .metric-plot')._fullLayout.yaxis.range[1]")
    assert top < 5
    assert [t["name"] for t in traces(page, "advantage")] == [f"#{job.pk} advantage_max", f"#{job.pk} advantage_min"]

    page.check("#chart-log")
    page.wait_for_function("() => [...document.querySelectorAll('#job-metrics .metric-plot')]"
                           ".every((p) => p._fullLayout.yaxis.type === 'log')")
    page.evaluate("() => { const s = document.getElementById('chart-smoothing'); s.value = '0.9';"
                  " s.dispatchEvent(new Event('input')); }")
    page.wait_for_function("() => document.querySelector('[data-group=loss] .metric-plot').data.length === 2")
    raw, smoothed = traces(page, "loss")
    assert not raw["shown"] and smoothed["shown"]  # the raw points stay, faint, under the smoothed line
    jumps = [abs(a - b) for a, b in zip(smoothed["y"][20:], smoothed["y"][21:], strict=False)]
    assert max(jumps) < 0.2 < min(abs(a - b) for a, b in zip(raw["y"][20:], raw["y"][21:], strict=False))
    # The choice is kept for the next job page.
    page.reload()
    page.wait_for_function("() => document.querySelector('[data-group=loss] .metric-plot')?.data?.length === 2")
    assert page.is_checked("#chart-log")


def test_another_run_is_overlaid_with_the_settings_that_differ(page, live_server, personas, browser_login):
    base = {"learning_rate": 1e-5, "epochs": 1, "l_max": 4096}
    first = finished_sft("run A", base)
    second = finished_sft("run B", {**base, "learning_rate": 3e-5}, loss_scale=2.0)
    browser_login(personas["viewer"])
    page.goto(f"{live_server.url}/jobs/{first.pk}/?compare={second.pk}")
    page.wait_for_function("() => document.querySelector('[data-group=loss] .metric-plot')?.data?.length === 2")
    assert [t["name"] for t in traces(page, "loss")] == [f"#{first.pk} loss", f"#{second.pk} loss"]
    rows = page.locator("#compare-diff tr").all_inner_texts()
    assert len(rows) == 2 and re.fullmatch(r"learning_rate\s+0\.00001\s+0\.00003", rows[1].strip())
    # Stop comparing, then pick the run again from the list of the same kind's jobs.
    page.click(f"#compare-list button[aria-label='Stop comparing with job {second.pk}']")
    page.wait_for_function("() => document.querySelector('[data-group=loss] .metric-plot').data.length === 1")
    assert "compare=" not in page.url
    page.select_option("#compare-with", str(second.pk))
    page.wait_for_function("() => document.querySelector('[data-group=loss] .metric-plot').data.length === 2")
    assert f"compare={second.pk}" in page.url


def as_worker(report) -> None:
    """Run ``report`` in its own thread, as a worker would (Playwright keeps an event loop in this
    one, where the channel layer's async_to_sync refuses to run)."""
    errors = []

    def run() -> None:
        try:
            report()
        except Exception as exc:  # handed to the test below
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert not errors, errors


def _login(page, base: str, user) -> None:
    page.goto(base + "/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


def test_the_page_follows_a_job_to_its_end_live_and_its_socket_stays_open_while_quiet(daphne_url, page, personas):  # noqa: F811
    # Started an hour ago and resumed: a guess from the start time would say hours.
    job = Job.objects.create(kind="selftest", title="quiet", state=Job.State.RUNNING, attempt=1, progress=0.2, step=2,
                             total_steps=10, started_at=timezone.now() - timedelta(hours=1),
                             created_by=personas["operator"])
    _login(page, daphne_url, personas["operator"])
    sockets = []
    page.on("websocket", lambda socket: sockets.append(socket))
    page.goto(f"{daphne_url}/jobs/{job.pk}/")
    page.wait_for_function("() => document.getElementById('job-live').textContent === 'live'")
    assert page.locator("#job-eta").inner_text() == "estimating the time left…"
    assert page.locator("#job-cancel").is_visible() and not page.locator("#job-retry").is_visible()

    # Quieter than the channel layer's 5 s blocking pop: the socket stays open.
    page.wait_for_timeout(6500)
    assert page.locator("#job-live").inner_text() == "live" and len(sockets) == 1

    def three_steps() -> None:
        progress = Progress(job.pk, attempt=1, min_interval_s=0)
        for step in (3, 4, 5):
            progress.update(step / 10, f"step {step}", step=step)
            time.sleep(0.3)

    as_worker(three_steps)
    page.wait_for_function("() => / s left$/.test(document.getElementById('job-eta').textContent)")
    assert page.locator("#job-steps").inner_text() == "step 5 of 10"

    as_worker(lambda: set_state(job.pk, Job.State.FAILED, attempt=1, error="RuntimeError: boom"))
    page.wait_for_selector("#job-state.state-failed")
    assert not page.locator("#job-cancel").is_visible() and page.locator("#job-retry").is_visible()
    assert page.locator("#job-error").inner_text() == "RuntimeError: boom" and page.locator("#job-eta").inner_text() == ""


def test_the_agent_run_panel_shows_the_trajectory_once_it_is_recorded(daphne_url, page, personas):  # noqa: F811
    job = Job.objects.create(kind="agent_run", title="agent", state=Job.State.RUNNING, attempt=1,
                             created_by=personas["operator"])
    _login(page, daphne_url, personas["viewer"])
    page.goto(f"{daphne_url}/jobs/{job.pk}/")
    page.wait_for_function("() => document.getElementById('job-live').textContent === 'live'")
    assert "No trajectory yet" in page.locator("#agent-run").inner_text()
    trajectory = make_trajectory(6, meta={"job": job.pk}, live=True)
    as_worker(lambda: Progress(job.pk, attempt=1).log(f"Agent on the paper; trajectory {trajectory.pk}"))
    page.wait_for_function("(pk) => document.getElementById('agent-run').textContent.includes(`Trajectory #${pk}`)",
                           arg=trajectory.pk)
    assert "live" in page.locator("#agent-run").inner_text()
