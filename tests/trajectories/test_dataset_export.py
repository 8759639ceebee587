"""The training dataset export: a page that says what will be exported, a job that renders the zip,
its download from the job page; the API answers 202 with the job."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from apps.jobs.models import Job
from apps.papers.models import Paper
from apps.trajectories import split_service
from apps.trajectories.splitting import IGNORE_INDEX, SplitManifest
from apps.trajectories.tokens import counter_for
from tests.support.streaming import streamed
from tests.trajectories.factories import make_trajectory, tiny_tokenizer
from tests.trajectories.helpers import downloaded_zip, export_zip, run_export, start_export

pytestmark = pytest.mark.django_db

WORDY = {i: "the agent runs ls " * 30 for i in range(2, 60)}


@pytest.fixture
def tokenizer(settings, tmp_path) -> Path:
    settings.KLONG_TOKENIZER_PATH = str(tiny_tokenizer(tmp_path / "tok"))
    counter_for.cache_clear()
    return Path(settings.KLONG_TOKENIZER_PATH)


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_the_export_page_without_any_tokenizer_asks_for_the_base_model_folder(client_for):
    trajectory = make_trajectory(20)
    response = client_for("viewer").get(f"/trajectories/export/?ids={trajectory.pk}")
    assert response.status_code == 400 and b"choose a model folder" in response.content
    assert b'name="base_model"' in response.content  # where to give it, on the same page
    assert b"export-form" not in response.content and not Job.objects.exists()


def test_without_klong_tokenizer_path_the_export_renders_with_the_newest_checkpoints_tokenizer(client_for, settings):
    from apps.jobs.models import ModelCheckpoint

    # The demo's model on a fresh install: no environment variable needed.
    tiny_tokenizer(Path(settings.DATA_DIR) / "models" / "demo")
    ModelCheckpoint.objects.create(name="demo", path="models/demo", base_model="tiny")
    trajectory = make_trajectory(60, texts=WORDY)
    page = client_for("viewer").get(f"/trajectories/export/?ids={trajectory.pk}")
    folder = str(Path(settings.DATA_DIR) / "models" / "demo")
    assert page.status_code == 200 and f'data-testid="export-tokenizer">{folder}<' in page.content.decode()
    job = start_export(client_for("viewer"), f"ids={trajectory.pk}&l_max=2000")
    assert job.config["base_model"] == folder
    run_export(job)
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(downloaded_zip(client_for("viewer"), job))).read("manifest.json"))
    assert manifest["tokenizer_path"] == folder and manifest["windows"] > 1


def test_the_export_renders_with_the_chosen_base_models_tokenizer(client_for, tmp_path):
    folder = tiny_tokenizer(tmp_path / "chosen")
    trajectory = make_trajectory(20)
    job = start_export(client_for("operator"), f"ids={trajectory.pk}&base_model={folder}")
    assert job.config["base_model"] == str(folder)
    (tmp_path / "empty").mkdir()
    refused = client_for("operator").get(f"/trajectories/export/?ids={trajectory.pk}&base_model={tmp_path / 'empty'}")
    assert refused.status_code == 400 and b"is not a model folder with a tokenizer" in refused.content
    # Any folder on the server is for those who may launch jobs; a viewer picks a checkpoint's.
    viewer = client_for("viewer").get(f"/trajectories/export/?ids={trajectory.pk}&base_model={folder}")
    assert viewer.status_code == 400 and b"Choose one of the checkpoints" in viewer.content


def test_the_export_page_says_what_is_exported_and_that_a_job_renders_it(client_for, tokenizer):
    trajectory = make_trajectory(20)
    html = client_for("viewer").get(f"/trajectories/export/?ids={trajectory.pk}&l_max=2000").content.decode()
    assert "1 trajectory" in html and "<code>l_max=2000</code>" in html and "background job" in html
    assert f'name="ids" value="{trajectory.pk}"' in html and 'name="l_max" value="2000"' in html
    assert not Job.objects.exists()  # looking is free: only the button queues the job


def test_starting_an_export_queues_a_job_and_goes_to_its_page(client_for, personas, tokenizer):
    trajectory = make_trajectory(20)
    job = start_export(client_for("viewer"), f"ids={trajectory.pk}&l_max=2000")
    assert (job.kind, job.state, job.queue, job.created_by) == ("dataset_export", "queued", "cpu", personas["viewer"])
    assert job.config == {"ids": [trajectory.pk], "base_model": str(tokenizer), "l_max": "2000"}
    page = client_for("viewer").get(f"/jobs/{job.pk}/").content.decode()
    assert "appears here for download when the job has finished" in page


def test_the_export_writes_input_ids_labels_and_the_manifest(client_for, tokenizer):
    trajectory = make_trajectory(60, texts=WORDY)
    archive = export_zip(client_for("viewer"), f"ids={trajectory.pk}&l_max=2000")
    rows = [json.loads(line) for line in archive.read("dataset.jsonl").decode().splitlines()]
    manifest = json.loads(archive.read("manifest.json"))
    assert len(rows) == manifest["windows"] > 1 and manifest["tokenizer"] == "tok"
    for row in rows:
        assert len(row["input_ids"]) == len(row["labels"]) <= 2000
        assert any(label != IGNORE_INDEX for label in row["labels"])
    saved = SplitManifest.from_json(manifest["trajectories"][0]["manifest"])
    assert saved.content_hash == manifest["trajectories"][0]["manifest"]["content_hash"]


def test_the_export_keeps_the_reasoning_in_the_templates_format_unless_asked_to_leave_it_out(
        client_for, settings, tmp_path):
    from tests.support.chat_families import build_family_tokenizer

    build_family_tokenizer(tmp_path / "qwen3", "qwen3")
    settings.KLONG_TOKENIZER_PATH = str(tmp_path / "qwen3")
    counter_for.cache_clear()
    trajectory = make_trajectory(8, reasoning={2: "First list the files.", 6: "The logs show it worked."})
    tokenizer = counter_for(settings.KLONG_TOKENIZER_PATH).tokenizer
    for query, kept in (("", True), ("&train_on_reasoning=false", False), ("&train_on_reasoning=true", True)):
        archive = export_zip(client_for("viewer"), f"ids={trajectory.pk}{query}")
        (row,) = [json.loads(line) for line in archive.read("dataset.jsonl").decode().splitlines()]
        trained = tokenizer.decode([t for t in row["labels"] if t != IGNORE_INDEX])
        assert ("<think>\nFirst list the files.\n</think>" in trained) is kept, query
        assert ("The logs show it worked." in tokenizer.decode(row["input_ids"])) is kept, query
        assert json.loads(archive.read("manifest.json"))["train_on_reasoning"] is kept
    page = client_for("viewer").get(f"/trajectories/export/?ids={trajectory.pk}&train_on_reasoning=maybe")
    assert page.status_code == 400 and b"train_on_reasoning: &#x27;maybe&#x27; is not yes or no" in page.content


def test_the_job_reports_progress_per_trajectory_and_offers_the_zip(client_for, tokenizer):
    first, second = make_trajectory(30, texts=WORDY), make_trajectory(30, texts=WORDY)
    job = start_export(client_for("viewer"), f"ids={first.pk},{second.pk}&l_max=2000")
    result = run_export(job)
    job.refresh_from_db()
    artifact = job.artifacts.get()
    assert (job.total_steps, job.step, job.progress) == (2, 2, 1.0)
    assert result["trajectories"] == 2 and result["windows"] > 2 and result["skipped"] == []
    assert (artifact.kind, artifact.name, artifact.downloadable) == ("dataset", "klong-sft-dataset.zip", True)
    assert artifact.size_bytes == result["size_bytes"] == len(downloaded_zip(client_for("viewer"), job))


def test_rejected_trajectories_are_never_exported(client_for, tokenizer):
    trajectory = make_trajectory(20, review="rejected", review_reason="bad")
    response = client_for("viewer").get(f"/trajectories/export/?ids={trajectory.pk}")
    assert response.status_code == 400 and b"rejected ones are never exported" in response.content


def test_a_trajectory_rejected_after_the_request_is_left_out(client_for, tokenizer):
    kept, rejected = make_trajectory(20), make_trajectory(20)
    job = start_export(client_for("viewer"), f"ids={kept.pk},{rejected.pk}")
    rejected.review, rejected.review_reason = "rejected", "found a leak"
    rejected.save()
    result = run_export(job)
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(downloaded_zip(client_for("viewer"), job))).read("manifest.json"))
    assert [t["trajectory"] for t in manifest["trajectories"]] == [kept.pk] and result["skipped"] == [rejected.pk]


def test_a_set_export_takes_the_accepted_trajectories_matching_the_filters(client_for, tokenizer):
    accepted = make_trajectory(12, review="accepted", model_name="claude")
    make_trajectory(12, model_name="claude")  # not reviewed
    make_trajectory(12, review="accepted", model_name="gpt")
    manifest = json.loads(export_zip(client_for("viewer"), "model=claude").read("manifest.json"))
    assert [t["trajectory"] for t in manifest["trajectories"]] == [accepted.pk]


def test_a_set_export_keeps_the_lists_paper_and_turn_filters(client_for, tokenizer):
    # The export read only q, source, model and end_state: a list filtered by paper exported every paper's runs.
    bam, other = Paper.objects.create(slug="bam", title="BAM"), Paper.objects.create(slug="other", title="Other")
    short = make_trajectory(12, review="accepted", paper=bam)
    long = make_trajectory(40, review="accepted", paper=bam)
    make_trajectory(12, review="accepted", paper=other)
    job = start_export(client_for("viewer"), "paper=bam")
    assert job.config["ids"] == [long.pk, short.pk]  # the list's order: newest first
    assert start_export(client_for("viewer"), "paper=bam&turns_max=20").config["ids"] == [short.pk]


def test_a_bad_list_filter_is_named_not_ignored(client_for, tokenizer):
    make_trajectory(12, review="accepted")
    response = client_for("viewer").get("/trajectories/export/?paper=no-such-paper")
    assert response.status_code == 400 and b"paper: Select a valid choice" in response.content


def test_a_window_that_cannot_be_split_fails_the_job_naming_the_trajectory(client_for, tokenizer):
    trajectory = make_trajectory(20, texts={0: "the system prompt is long " * 200})
    job = start_export(client_for("viewer"), f"ids={trajectory.pk}&l_max=300&prefix_end=3")
    with pytest.raises(split_service.ExportError, match=rf"Trajectory {trajectory.pk}: the prefix"):
        run_export(job)
    folder = Path(settings.DATA_DIR) / "exports" / f"job-{job.pk}"
    assert not job.artifacts.exists() and list(folder.iterdir()) == []  # no partial file left behind


def test_a_cancelled_export_stops_and_leaves_no_file(client_for, tokenizer):
    from apps.jobs.progress import JobCancelled

    job = start_export(client_for("viewer"), f"ids={make_trajectory(20).pk},{make_trajectory(20).pk}")
    Job.objects.filter(pk=job.pk).update(state=Job.State.CANCELLING)
    with pytest.raises(JobCancelled):
        run_export(job)
    assert list((Path(settings.DATA_DIR) / "exports" / f"job-{job.pk}").iterdir()) == []


def test_the_api_answers_202_with_the_export_job(personas, tokenizer):
    trajectory = make_trajectory(30)
    response = api(personas["viewer"]).post("/api/trajectories/export-dataset/",
                                            {"ids": str(trajectory.pk), "l_max": 4000}, format="json")
    assert response.status_code == 202 and response.json()["trajectories"] == 1
    job = Job.objects.get(pk=response.json()["job"])
    assert (job.kind, job.config) == ("dataset_export", {"ids": [trajectory.pk], "base_model": str(tokenizer),
                                                         "l_max": 4000})


def test_the_api_refuses_a_bad_split_option_at_once(personas, tokenizer):
    trajectory = make_trajectory(30)
    response = api(personas["viewer"]).post("/api/trajectories/export-dataset/",
                                            {"ids": str(trajectory.pk), "l_max": "lots"}, format="json")
    assert response.status_code == 400 and "l_max" in response.json()["detail"] and not Job.objects.exists()


def test_one_user_may_have_only_so_many_exports_waiting(personas, settings, tokenizer):
    settings.KLONG_EXPORT_JOBS_PER_USER = 2
    body = {"ids": str(make_trajectory(12).pk)}
    viewer = api(personas["viewer"])
    assert [viewer.post("/api/trajectories/export-dataset/", body, format="json").status_code
            for _ in range(3)] == [202, 202, 429]
    refused = viewer.post("/api/trajectories/export-dataset/", body, format="json").json()["detail"]
    assert "KLONG_EXPORT_JOBS_PER_USER" in refused
    assert api(personas["curator"]).post("/api/trajectories/export-dataset/", body, format="json").status_code == 202
    Job.objects.filter(created_by=personas["viewer"]).update(state=Job.State.SUCCEEDED)
    assert viewer.post("/api/trajectories/export-dataset/", body, format="json").status_code == 202


@pytest.mark.embedded
@pytest.mark.django_db(transaction=True)
def test_the_export_job_on_the_worker_gives_the_bytes_of_a_direct_render(personas, tokenizer, celery_worker):
    trajectories = [make_trajectory(40, texts=WORDY, review="accepted") for _ in range(2)]
    viewer = api(personas["viewer"])
    response = viewer.post("/api/trajectories/export-dataset/", {"l_max": 1500}, format="json")
    assert response.status_code == 202
    job_id = response.json()["job"]
    deadline = time.monotonic() + 60
    while (job := Job.objects.get(pk=job_id)).state not in Job.FINISHED and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job.state == Job.State.SUCCEEDED, job.error
    artifact = viewer.get(f"/api/jobs/{job_id}/artifacts/").json()[0]
    assert artifact["download"].endswith(f"/api/jobs/{job_id}/artifacts/{artifact['id']}/download/")
    served = streamed(viewer.get(artifact["download"]))
    # What the inline export answered: the same writer over the same selection, in this process.
    expected = io.BytesIO()
    chosen = split_service.export_selection({"l_max": 1500})
    split_service.write_dataset(expected, split_service.exported_trajectories([t.pk for t in chosen]), {"l_max": 1500})
    assert served == expected.getvalue()
    assert [t["trajectory"] for t in json.loads(zipfile.ZipFile(io.BytesIO(served)).read("manifest.json"))[
        "trajectories"]] == sorted((t.pk for t in trajectories), reverse=True)
