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


def _minimap_ink(page) -> int:
    """Pixels of the minimap canvas drawn in the curve's blue."""
    return page.evaluate("""() => { const c = document.querySelector('#minimap canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i + 2] > 150 && d[i] < 120 && d[i + 3] > 100) n++;
        return n; }""")


def test_the_minimap_draws_under_the_real_csp_without_webgl_or_plotly_and_a_click_goes_there(
    strict_page, live_server, personas, browser_login
):
    trajectory = make_trajectory(1000)
    page = browser_login(personas["viewer"], on=strict_page)
    page.goto(f"{live_server.url}/trajectories/{trajectory.pk}/")
    page.wait_for_selector(".turn .turn-text")
    page.wait_for_function("() => document.querySelector('#minimap canvas')?.width > 0")
    assert _minimap_ink(page) > 200  # the cumulative-token curve is on screen
    assert "WebGL" not in page.inner_text("body")
    assert page.evaluate("() => window.Plotly === undefined && !performance.getEntriesByType('resource')"
                         ".some((e) => e.name.includes('plotly'))")
    # A click on the minimap goes to the turn under the pointer.
    box = page.locator("#minimap canvas").bounding_box()
    x = page.evaluate("() => window.trajectoryViewer.minimap.x(500)")
    page.mouse.click(box["x"] + x, box["y"] + box["height"] / 2)
    page.wait_for_selector("#turn-500.current .turn-text")
    assert _visible(page, "#turn-500") and page.csp_violations == []


def test_after_scrolling_with_the_mouse_j_moves_on_from_the_turns_on_screen(page, live_server, personas, browser_login):
    trajectory = make_trajectory(1000)
    _open(page, live_server, personas, browser_login, trajectory, "#turn-813")
    page.wait_for_selector("#turn-813.current .turn-text")
    box = page.locator("#turns").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(8):  # the wheel, as a user scrolls back by hand
        page.mouse.wheel(0, -8000)
    # The wheel's scrolling has ended (the same scrollTop twice, 250 ms apart): a wheel event still
    # queued when j is pressed would scroll the new current turn away again.
    page.wait_for_function(
        """() => { const top = document.getElementById('turns').scrollTop, same = window.__lastTop === top;
        window.__lastTop = top; return same && !document.querySelector('#turn-813'); }""",
        polling=250,
    )
    page.keyboard.press("j")
    current = page.evaluate("() => window.trajectoryViewer.current")
    page.wait_for_selector(f"#turn-{current}.current .turn-text")
    assert current < 800 and _visible(page, f"#turn-{current}")
    assert page.url.endswith(f"#turn-{current}")


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


def test_a_digit_picks_the_label_and_the_note_typed_after_it_is_kept(page, live_server, personas, browser_login):
    from apps.trajectories.models import AnnotationLabel, TurnAnnotation
    from apps.trajectories.services import ensure_default_labels

    ensure_default_labels()
    trajectory = make_trajectory(30)
    browser_login(personas["curator"])
    page.goto(f"{live_server.url}/trajectories/{trajectory.pk}/#turn-7")
    page.wait_for_selector("#turn-7.current .turn-text")
    page.keyboard.press("a")
    page.wait_for_selector("#annotate[open]")
    page.keyboard.press("2")
    page.keyboard.type("edited the wrong file")  # letters that would pick labels by type-ahead
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#turn-7 .badge.label")
    annotation = TurnAnnotation.objects.get()
    assert annotation.label == AnnotationLabel.objects.order_by("name")[1]
    assert annotation.note == "edited the wrong file"


def test_an_invalid_l_max_is_explained_and_the_old_figure_goes(page, live_server, personas, browser_login):
    trajectory = make_trajectory(60, texts={i: "word " * 200 for i in range(2, 60)})
    browser_login(personas["viewer"])
    page.goto(f"{live_server.url}/trajectories/{trajectory.pk}/split/?l_max=8000")
    page.wait_for_selector("#window-plot .barlayer")
    page.evaluate("() => window.splitView.openWindow(1)")
    page.wait_for_selector("#inspector .message.part-target")
    page.fill("#f-l_max", "0")
    alert = page.wait_for_selector("#split-plan [role=alert]")
    assert "l_max must be an integer >= 1" in alert.inner_text()
    assert page.locator("#window-plot").count() == 0
    # The window inspected belonged to the old settings: it goes too.
    page.wait_for_selector("#inspector:has-text('Click a window')")
    page.fill("#f-l_max", "4000")  # a valid value draws again
    page.wait_for_selector("#window-plot .barlayer")


def test_clicking_a_window_scrolls_to_its_inspector(page, live_server, personas, browser_login):
    trajectory = make_trajectory(120, texts={i: "word " * 200 for i in range(2, 120)})
    browser_login(personas["viewer"])
    page.set_viewport_size({"width": 1280, "height": 700})
    page.goto(f"{live_server.url}/trajectories/{trajectory.pk}/split/?l_max=3000")
    page.wait_for_selector("#window-plot .barlayer")
    # Plotly takes clicks on its drag layer, above the bars: click where window 4's targets bar is.
    bar = page.locator("#window-plot .barlayer .trace").nth(2).locator(".point").nth(3).bounding_box()
    page.mouse.click(bar["x"] + bar["width"] / 2, bar["y"] + bar["height"] / 2)
    page.wait_for_selector("#inspector .message.part-target")
    assert page.locator("#inspector h2").inner_text().startswith("Window 4")
    page.wait_for_function("() => { const r = document.getElementById('inspector').getBoundingClientRect();"
                           " return r.top >= -1 && r.top < window.innerHeight / 2; }")


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


def test_a_curator_works_through_an_annotation_queue_from_the_keyboard(page, live_server, personas, browser_login):
    from apps.trajectories.models import AnnotationQueue, TurnAnnotation
    from apps.trajectories.services import ensure_default_labels

    ensure_default_labels()
    trajectory = make_trajectory(9, texts={2: "first <b>answer</b>", 4: "second answer", 6: "third answer"})
    browser_login(personas["curator"])
    page.goto(f"{live_server.url}/trajectories/?turns_min=9")
    page.click("[data-testid=queue-create] summary")
    page.fill("[data-testid=queue-create] #id_name", "wrong files")
    page.click("[data-testid=queue-create] button[type=submit]")
    page.click("[data-testid=queue-start]")

    def shown(text: str) -> None:
        """Waits for a queue item and for its keys: a key pressed before the script ran is lost."""
        page.wait_for_selector(f"[data-testid=queue-turn]:has-text('{text}')")
        page.wait_for_selector("#queue-form[data-ready='1']")

    shown("first <b>answer</b>")  # its content, as text
    page.keyboard.press("2")
    page.keyboard.type("edited the wrong file")
    page.keyboard.press("Control+Enter")
    shown("second answer")
    page.keyboard.press("s")
    shown("third answer")
    assert "2 of 4 done" in page.inner_text("[data-testid=queue-position]")
    page.keyboard.press("u")  # undo the skip: the second turn is back
    shown("second answer")
    annotation = TurnAnnotation.objects.get()
    assert (annotation.turn_index, annotation.label.name, annotation.note) == (2, "error", "edited the wrong file")
    queue = AnnotationQueue.objects.get()
    assert queue.items.filter(state="open").count() == 3 and trajectory.pk == queue.items.first().trajectory_id
