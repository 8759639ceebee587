"""The API client and its command line against a real server (pytest-django's live server), with a
real API token: push trajectories and a submission, pull a dataset and a checkpoint."""

from __future__ import annotations

import io
import json
import zipfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from django.conf import settings

from apps.client.klong_client import KlongClient, KlongError, main
from apps.core.tokens import create_token
from apps.jobs.models import Job, ModelCheckpoint
from apps.trajectories.models import Trajectory
from tests.judging.helpers import make_endpoint, make_paper_with_rubric, make_submission
from tests.trajectories.factories import make_trajectory, tiny_tokenizer
from tests.trajectories.test_pages import GOOD

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def studio(live_server, personas):
    """A client for each persona, authenticated by a real API token."""

    def make(role: str) -> KlongClient:
        _, key = create_token(personas[role], "cluster")
        return KlongClient(live_server.url, key, timeout=30)

    return make


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(list(args))
    return status, out.getvalue(), err.getvalue()


def test_a_cluster_pushes_trajectories_with_a_token(studio, tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_bytes(GOOD)
    answer = studio("curator").push_trajectories(path)
    ids = [t["id"] for t in answer["trajectories"]]
    assert len(ids) == 1 and Trajectory.objects.get(pk=ids[0]).turn_count == 2
    with pytest.raises(KlongError) as refused:
        studio("viewer").push_trajectories(path)
    assert refused.value.status == 403


def test_a_submission_folder_is_tarred_uploaded_and_queued_for_judging(studio, tmp_path, personas):
    paper, _ = make_paper_with_rubric("bam", split="eval")
    make_endpoint("http://127.0.0.1:9/v1")
    folder = make_submission(tmp_path / "run-17")
    answer = studio("operator").submit("bam", "stub", folder)
    job = Job.objects.get(pk=answer["job"])
    assert (job.queue, job.priority, job.state) == ("judge", 0, Job.State.QUEUED)
    stored = Path(settings.DATA_DIR) / answer["submission"]
    assert (stored / "train.py").read_text() == (folder / "train.py").read_text()
    assert (stored / "model.bin").read_bytes() == (folder / "model.bin").read_bytes()


def test_a_cluster_pulls_a_dataset_and_a_checkpoint(studio, tmp_path, settings, celery_worker):
    from apps.trajectories.tokens import counter_for

    settings.KLONG_TOKENIZER_PATH = str(tiny_tokenizer(tmp_path / "tok"))
    counter_for.cache_clear()
    trajectory = make_trajectory(30)
    client = studio("viewer")
    # The server renders the dataset in a job; the client waits for it and downloads the zip.
    dataset = client.pull_dataset(tmp_path / "out" / "sft.zip", ids=[trajectory.pk], l_max=4000, timeout=60)
    assert set(zipfile.ZipFile(dataset).namelist()) == {"dataset.jsonl", "manifest.json"}
    assert Job.objects.get(kind="dataset_export").config == {"ids": [trajectory.pk], "l_max": 4000,
                                                              "base_model": settings.KLONG_TOKENIZER_PATH}
    model = Path(settings.DATA_DIR) / "checkpoints" / "job-1" / "final"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text('{"hidden_size": 64}')
    (model / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 10)
    checkpoint = ModelCheckpoint.objects.create(name="ckpt", path="checkpoints/job-1/final", base_model="tiny")
    assert [c["id"] for c in client.checkpoints()] == [checkpoint.pk]
    folder = client.pull_checkpoint(checkpoint.pk, tmp_path / "models" / "ckpt", extract=True)
    assert (folder / "sub" / "weights.bin").read_bytes() == bytes(range(256)) * 10
    assert json.loads((folder / "config.json").read_text()) == {"hidden_size": 64}
    assert not list((tmp_path / "models").glob("*.partial"))


def test_the_command_line_prints_json_and_reports_refusals_on_stderr(studio, live_server):
    job = Job.objects.create(kind="selftest", state=Job.State.SUCCEEDED)
    key = studio("viewer").session.headers["Authorization"].removeprefix("Token ")
    status, out, _ = cli("--url", live_server.url, "--token", key, "job", str(job.pk))
    assert status == 0 and json.loads(out)["state"] == "succeeded"
    status, out, err = cli("--url", live_server.url, "--token", "not-a-key", "checkpoints")
    assert status == 1 and out == "" and "HTTP 401" in err
    status, _, err = cli("--url", live_server.url, "--token", key, "launch", "selftest", "--config", "{}")
    assert status == 1 and "HTTP 403" in err


@pytest.mark.parametrize("path", ["/api/workers/", "/api/checkpoints/"])
def test_outsiders_cannot_list_workers_or_checkpoints(client_for, path, settings):
    settings.KLONG_WORKER_PING_TIMEOUT = 0.1  # no worker runs here: don't wait for answers
    assert client_for("outsider").get(path).status_code == 403
    assert client_for("viewer").get(path).status_code == 200
