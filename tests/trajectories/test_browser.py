from __future__ import annotations

import pytest

from tests.trajectories.factories import make_trajectory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _visible(page, selector: str) -> bool:
    """Whether the element is inside the scrolling turn list's visible area."""
    return page.evaluate(
        """(sel) => { const el = document.querySelector(sel); if (!el) return false;
        const box = el.getBoundingClientRect(), view = document.getElementById('turns').getBoundingClientRect();
        return box.bottom > view.top && box.top < view.bottom; }""",
        selector,
    )


def _open(page, live_server, personas, browser_login, trajectory, suffix=""):
    browser_login(personas["viewer"])
    page.goto(f"{live_server.url}/trajectories/{trajectory.pk}/{suffix}")
    page.wait_for_selector(".turn .turn-text")
    return page


def test_a_script_in_agent_text_renders_as_text_and_never_runs(page, live_server, personas, browser_login):
    payload = "<script>window.__xss = 1</script><img src=x onerror=\"window.__xss = 2\">"
    trajectory = make_trajectory(6, texts={2: payload}, title="<script>window.__xss = 3</script>")
    _open(page, live_server, personas, browser_login, trajectory)
    page.wait_for_selector("#turn-2 .turn-text")
    assert page.locator("#turn-2 .turn-text").inner_text() == payload
    assert page.locator("#turn-2 img, #turn-2 script").count() == 0
    assert page.evaluate("window.__xss") is None


def test_a_deep_link_opens_a_1000_turn_run_at_that_turn(page, live_server, personas, browser_login):
    trajectory = make_trajectory(1000)
    _open(page, live_server, personas, browser_login, trajectory, "#turn-512")
    page.wait_for_selector("#turn-512 .turn-text")
    assert _visible(page, "#turn-512")
    assert page.locator("#turn-512").get_attribute("class").split().count("current") == 1
    # Virtualised: only the turns near the viewport exist in the page.
    assert page.locator(".turn").count() < 100
    # The minimap (Plotly, loaded once the turns are on screen) follows, a point per turn.
    page.wait_for_selector("#minimap .main-svg")
    assert page.evaluate("document.getElementById('minimap').data[0].x.length") == 1000


def test_search_moves_to_the_next_and_previous_match_and_highlights_it(page, live_server, personas, browser_login):
    trajectory = make_trajectory(400, texts={40: "found the NEEDLE", 300: "another needle", 350: "needle 3"})
    _open(page, live_server, personas, browser_login, trajectory)
    page.keyboard.press("/")
    page.keyboard.type("needle")
    page.keyboard.press("Enter")
    page.wait_for_selector("#turn-40 mark.hit")
    assert page.locator("#search-status").inner_text() == "1 of 3"
    assert page.locator("#turn-40 mark.hit").inner_text() == "NEEDLE"
    page.click("#search-next")
    page.wait_for_selector("#turn-300 mark.hit")
    assert _visible(page, "#turn-300") and page.locator("#search-status").inner_text() == "2 of 3"
    page.click("#search-prev")
    page.wait_for_selector("#turn-40 mark.hit")
    assert _visible(page, "#turn-40") and "#turn-40" in page.url


def test_g_jumps_to_a_turn_and_j_k_step_through_turns(page, live_server, personas, browser_login):
    trajectory = make_trajectory(600)
    _open(page, live_server, personas, browser_login, trajectory)
    page.locator("#turns").click()
    page.keyboard.press("g")
    page.keyboard.type("450")
    page.keyboard.press("Enter")
    page.wait_for_selector("#turn-450.current .turn-text")
    assert _visible(page, "#turn-450")
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("k")
    page.wait_for_selector("#turn-451.current")
    assert page.url.endswith("#turn-451")


def test_a_long_tool_output_is_collapsed_until_expanded(page, live_server, personas, browser_login):
    long_output = "\n".join(f"line {n}" for n in range(200))
    trajectory = make_trajectory(6, texts={3: long_output})
    _open(page, live_server, personas, browser_login, trajectory)
    page.wait_for_selector("#turn-3 .turn-text")
    assert "line 199" not in page.locator("#turn-3 .turn-text").inner_text()
    page.click("#turn-3 button.expand")
    page.wait_for_selector("#turn-3 button.expand:text('Collapse')")
    assert "line 199" in page.locator("#turn-3 .turn-text").inner_text()


def test_the_question_mark_opens_the_shortcut_help(page, live_server, personas, browser_login):
    trajectory = make_trajectory(6)
    _open(page, live_server, personas, browser_login, trajectory)
    page.locator("#turns").click()
    page.keyboard.press("?")
    assert page.locator("#help").is_visible()


def test_the_split_view_redraws_on_a_config_change_and_inspects_a_window(page, live_server, personas, browser_login):
    trajectory = make_trajectory(120, texts={i: "word " * 200 for i in range(2, 120)})
    browser_login(personas["viewer"])
    page.goto(f"{live_server.url}/trajectories/{trajectory.pk}/split/?l_max=8000")
    page.wait_for_selector("#window-plot .barlayer")
    before = page.locator(".split-stats strong").inner_text()
    page.fill("#f-l_max", "3000")
    page.wait_for_function(f"document.querySelector('.split-stats strong').textContent !== '{before}'")
    assert int(page.locator(".split-stats strong").inner_text()) > int(before)
    assert "l_max=3000" in page.url
    # A click on a window row opens the inspector (the plot's click handler calls this).
    page.evaluate("window.splitView.openWindow(2)")
    page.wait_for_selector("#inspector .message.part-target")
    assert page.locator("#inspector h2").inner_text().startswith("Window 2")
    assert page.locator("#inspector .loss").count() > 0


def test_a_curator_annotates_a_turn_from_the_keyboard(page, live_server, personas, browser_login):
    from apps.trajectories.models import TurnAnnotation
    from apps.trajectories.services import ensure_default_labels

    ensure_default_labels()  # transactional tests flush the labels the migration seeded
    trajectory = make_trajectory(30)
    browser_login(personas["curator"])
    page.goto(f"{live_server.url}/trajectories/{trajectory.pk}/#turn-7")
    page.wait_for_selector("#turn-7.current .turn-text")
    page.keyboard.press("a")
    page.wait_for_selector("#annotate[open]")
    page.keyboard.press("Tab")
    page.keyboard.type("wrong file")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#turn-7 .badge.label")
    annotation = TurnAnnotation.objects.get()
    assert (annotation.turn_index, annotation.note, annotation.author) == (7, "wrong file", personas["curator"])


def test_an_export_from_the_split_page_runs_as_a_job_whose_page_offers_the_zip(
    page, live_server, personas, browser_login, settings, tmp_path, celery_worker
):
    import io
    import json
    import zipfile

    from apps.trajectories.tokens import counter_for
    from tests.trajectories.factories import tiny_tokenizer

    settings.KLONG_TOKENIZER_PATH = str(tiny_tokenizer(tmp_path / "tok"))
    counter_for.cache_clear()
    trajectory = make_trajectory(30, texts={i: "the agent runs ls " * 20 for i in range(2, 30)})
    browser_login(personas["viewer"])
    page.goto(f"{live_server.url}/trajectories/{trajectory.pk}/split/?l_max=1500")
    page.click("#export-link")
    assert "background job" in page.locator("[data-testid=export-summary] + p").inner_text()
    page.click("[data-testid=export-form] button[type=submit]")
    page.wait_for_url(f"{live_server.url}/jobs/*/")
    # The page was opened before the job finished: the button appears when it does, without a reload.
    link = page.wait_for_selector("#job-downloads a", timeout=30_000)
    assert link.inner_text().startswith("Download klong-sft-dataset.zip")
    with page.expect_download() as download:
        link.click()
    archive = zipfile.ZipFile(io.BytesIO(download.value.path().read_bytes()))
    manifest = json.loads(archive.read("manifest.json"))
    assert [t["trajectory"] for t in manifest["trajectories"]] == [trajectory.pk]
    assert manifest["trajectories"][0]["manifest"]["config"]["l_max"] == 1500
