"""The STORAGES setting, chosen by environment variables (no Django import: settings.py calls it).

Two ways to share files between machines:

- ``KLONG_STORAGE=filesystem`` (the default): media on a folder (``KLONG_MEDIA_ROOT``, default
  ``DATA_DIR/media``). On a cluster the data folder (``KLONG_DATA_DIR``) is a shared mount (NFS,
  CephFS, a cloud file share) seen at the same path by the web servers and every worker, so
  submissions, checkpoints and import files written by one machine are read by the others as is.
- ``KLONG_STORAGE=s3``: media in an S3-compatible bucket through django-storages (AWS S3, MinIO,
  Ceph RGW, R2...). The data folder stays local to each machine and acts as a cache: submissions,
  checkpoints and large import files are published to the bucket when written and fetched by
  whichever machine needs them (``apps.ops.artifacts``). Credentials come from boto3's own
  sources (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, an instance role, ``~/.aws``), never
  from settings.
"""

from __future__ import annotations

from collections.abc import Mapping

STORAGE_KINDS = ("filesystem", "s3")


class StorageConfigError(ValueError):
    """A storage variable is missing or wrong; the message names it."""


def storages_setting(env: Mapping[str, str]) -> dict:
    """Django's STORAGES for the chosen kind; static files are always served by whitenoise, under
    content-hashed names and compressed (collected by ``manage.py prepare_static``, apps/core/staticfiles.py)."""
    kind = env.get("KLONG_STORAGE", "filesystem").strip().lower() or "filesystem"
    if kind not in STORAGE_KINDS:
        raise StorageConfigError(f"KLONG_STORAGE={kind!r} is not one of: {', '.join(STORAGE_KINDS)}.")
    staticfiles = {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"}
    if kind == "filesystem":
        # No location option: the storage follows settings.MEDIA_ROOT (KLONG_MEDIA_ROOT), also when
        # a test or a management command overrides it.
        return {"default": {"BACKEND": "django.core.files.storage.FileSystemStorage"}, "staticfiles": staticfiles}
    bucket = env.get("KLONG_S3_BUCKET", "").strip()
    if not bucket:
        raise StorageConfigError("KLONG_S3_BUCKET is missing: KLONG_STORAGE=s3 needs the bucket's name.")
    options: dict = {
        "bucket_name": bucket,
        "location": env.get("KLONG_S3_PREFIX", "klong").strip().strip("/"),
        # Private objects; downloads go through the app (login and role checked), never public URLs.
        "default_acl": None,
        "querystring_auth": True,
        "file_overwrite": True,
    }
    endpoint = env.get("KLONG_S3_ENDPOINT_URL", "").strip()
    if endpoint:
        if not endpoint.startswith(("http://", "https://")):
            raise StorageConfigError(f"KLONG_S3_ENDPOINT_URL={endpoint!r} must start with http:// or https://.")
        options["endpoint_url"] = endpoint
        # MinIO and most self-hosted S3 servers want path-style addressing.
        options["addressing_style"] = "path"
    region = env.get("KLONG_S3_REGION", "").strip()
    if region:
        options["region_name"] = region
    return {"default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options}, "staticfiles": staticfiles}


def artifact_sync_enabled(storages: Mapping) -> bool:
    """Whether files under the data folder travel through the media storage between machines."""
    return storages["default"]["BACKEND"] != "django.core.files.storage.FileSystemStorage"
