"""Media storage settings, files that travel between machines through it, and JSON logs."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.ops.artifacts import ArtifactError, fetch_artifact, publish_artifact
from klong_site.storage import StorageConfigError, artifact_sync_enabled, storages_setting
from tests.support.streaming import streamed

ROOT = Path(__file__).resolve().parents[2]


def test_filesystem_storage_is_the_default_and_s3_is_switched_on_by_env():
    from storages.backends.s3 import S3Storage

    local = storages_setting({})
    assert local["default"] == {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    assert not artifact_sync_enabled(local)
    s3 = storages_setting({"KLONG_STORAGE": "s3", "KLONG_S3_BUCKET": "klong", "KLONG_S3_PREFIX": "/prod/",
                           "KLONG_S3_ENDPOINT_URL": "http://minio:9000", "KLONG_S3_REGION": "eu-west-1"})
    options = s3["default"]["OPTIONS"]
    assert s3["default"]["BACKEND"] == "storages.backends.s3.S3Storage" and artifact_sync_enabled(s3)
    assert (options["bucket_name"], options["location"], options["endpoint_url"]) == ("klong", "prod", "http://minio:9000")
    # django-storages refuses unknown options: these are all real ones (no network at construction).
    storage = S3Storage(**options)
    assert storage.bucket_name == "klong" and storage.default_acl is None
    assert s3["staticfiles"] == local["staticfiles"]


@pytest.mark.parametrize("env, message", [
    ({"KLONG_STORAGE": "gcs"}, "KLONG_STORAGE='gcs' is not one of: filesystem, s3"),
    ({"KLONG_STORAGE": "s3"}, "KLONG_S3_BUCKET is missing"),
    ({"KLONG_STORAGE": "s3", "KLONG_S3_BUCKET": "b", "KLONG_S3_ENDPOINT_URL": "minio:9000"}, "must start with http"),
])
def test_a_wrong_storage_variable_is_named_in_the_error(env, message):
    with pytest.raises(StorageConfigError, match=message):
        storages_setting(env)


@pytest.fixture
def bucket(settings, tmp_path):
    """Artifact sync on, through a storage that only shares the Storage API with the data folder
    (a separate folder standing where the S3 bucket would be)."""
    settings.KLONG_ARTIFACT_SYNC = True
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path / "bucket")}}}
    return tmp_path / "bucket"


def tar_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.django_db
def test_a_submission_stored_by_the_web_server_reaches_a_worker_without_it(bucket, settings):
    from apps.judging.services import store_submission_upload, submission_folder

    files = {"train.py": b"print('train')\n", "src/model.py": b"class Model: ...\n", "w.bin": bytes(range(256))}
    relative = store_submission_upload(SimpleUploadedFile("s.tar.gz", tar_of(files)))
    assert (bucket / "artifacts" / "dirs" / f"{relative}.zip").is_file()
    # The judge worker's machine: the same data folder path, but nothing in it.
    shutil.rmtree(Path(settings.DATA_DIR) / relative)
    folder = submission_folder(relative)
    assert {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == files
    assert not list(folder.parent.glob(".klong-fetch-*"))


@pytest.mark.django_db
def test_a_checkpoint_trained_on_another_machine_is_downloaded_from_the_storage(bucket, settings, client_for):
    from apps.jobs.models import ModelCheckpoint

    model = Path(settings.DATA_DIR) / "checkpoints" / "job-9" / "final"
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"\x01" * 4096)
    publish_artifact(model)
    shutil.rmtree(model.parent)
    checkpoint = ModelCheckpoint.objects.create(name="c", path="checkpoints/job-9/final", base_model="tiny")
    response = client_for("viewer").get(f"/jobs/checkpoints/{checkpoint.pk}/download/")
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(streamed(response)))
    assert archive.read("model.safetensors") == b"\x01" * 4096
    missing = ModelCheckpoint.objects.create(name="gone", path="checkpoints/job-10/final", base_model="tiny")
    assert client_for("viewer").get(f"/jobs/checkpoints/{missing.pk}/download/").status_code == 404


def test_an_archive_in_the_bucket_that_points_outside_is_refused(bucket, settings):
    target = Path(settings.DATA_DIR) / "submissions" / "evil"
    key = bucket / "artifacts" / "dirs" / "submissions" / "evil.zip"
    key.parent.mkdir(parents=True)
    with zipfile.ZipFile(key, "w") as out:
        out.writestr("../../escaped.txt", "x")
    with pytest.raises(ArtifactError, match="unsafe path"):
        fetch_artifact(target)
    assert not target.exists() and not (Path(settings.DATA_DIR) / "escaped.txt").exists()


def test_log_format_json_writes_one_json_object_per_line():
    code = ("import django, logging; django.setup(); "
            "logging.getLogger('klong.test').warning('job %s done', 7, extra={'job': 7})")
    env = {**os.environ, "LOG_FORMAT": "json", "DJANGO_SETTINGS_MODULE": "klong_site.settings"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stderr.strip().splitlines()[-1])
    assert (entry["level"], entry["logger"], entry["message"], entry["job"]) == ("WARNING", "klong.test", "job 7 done", 7)
