"""Importing real-world logs from the import page, as a new user does."""

from __future__ import annotations

import pytest

from tests.trajectories.factories import INSPECT_HEADER, codex_rollout, epochs_eval, inspect_eval, inspect_sample

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _upload(page, live_server, path) -> None:
    page.goto(f"{live_server.url}/trajectories/import/")
    page.set_input_files("#id_file", str(path))
    page.click("#upload-form button[type=submit]")


def test_a_zstd_eval_imports_each_epoch_under_its_own_name_with_its_score(
    page, live_server, personas, browser_login, tmp_path
):
    browser_login(personas["curator"])
    _upload(page, live_server, epochs_eval(tmp_path / "2026-01-05T10-00-00_oxdna-simple.eval"))
    page.wait_for_url(f"{live_server.url}/trajectories/")
    rows = page.locator("table.list tbody tr")
    titles = sorted(rows.locator("td:nth-child(2) a").all_inner_texts())
    assert titles == [f"oxdna_simple:default (epoch {n})" for n in range(1, 7)]
    scores = sorted(rows.locator("td:nth-child(8)").all_inner_texts())
    assert scores == ["0.000"] * 3 + ["1.000"] * 3


def test_an_archive_in_an_unreadable_compression_is_refused_naming_it(
    page, live_server, personas, browser_login, tmp_path
):
    browser_login(personas["curator"])
    path = inspect_eval(tmp_path / "ppmd.eval",
                     {"header.json": INSPECT_HEADER, "samples/1_epoch_1.json": inspect_sample(1, "C")},
                     method=98)
    _upload(page, live_server, path)
    error = page.wait_for_selector("#upload-error:has-text('method 98')")
    assert "ppmd (method 98), which cannot be read" in error.inner_text()


def test_a_codex_session_shows_the_model_and_each_call_once(page, live_server, personas, browser_login, tmp_path):
    browser_login(personas["curator"])
    _upload(page, live_server, codex_rollout(tmp_path / "rollout-2025-10-02T10-00-00-0199a213.jsonl"))
    page.wait_for_url(f"{live_server.url}/trajectories/*/")
    page.wait_for_selector("#turn-6 .turn-text")
    assert "gpt-5-codex" in page.inner_text(".traj-summary")
    assert page.locator(".tool-call .call-name").all_inner_texts() == ["→ shell", "→ apply_patch"]
    assert '"type"' not in page.inner_text("#turns")
