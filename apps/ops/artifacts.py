"""Files under the data folder that another machine needs, through the media storage.

With ``KLONG_STORAGE=s3`` each machine's data folder is a local cache. What one machine writes and
another reads goes through the bucket:

- a judge submission, stored by the web server, graded by a judge worker;
- a large trajectory upload, staged by the web server, imported by a CPU worker;
- a checkpoint, trained on a GPU worker, downloaded from the web server or served by another worker.

The writer calls ``publish_artifact(path)``; the reader calls ``fetch_artifact(path)`` before it
looks, which downloads the copy only if the path is missing locally. A folder travels as one zip
(``artifacts/dirs/<relative path>.zip``), a file as itself (``artifacts/files/<relative path>``).
With a shared data folder (``KLONG_ARTIFACT_SYNC`` off, the default) both are no-ops.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import zipfile
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage

log = logging.getLogger(__name__)


class ArtifactError(RuntimeError):
    pass


def _relative(path: Path) -> str:
    root = Path(settings.DATA_DIR).resolve()
    full = Path(path).resolve()
    if root not in full.parents:
        raise ArtifactError(f"{path} is not inside the data folder")
    return full.relative_to(root).as_posix()


def _keys(path: Path) -> tuple[str, str]:
    relative = _relative(path)
    return f"artifacts/dirs/{relative}.zip", f"artifacts/files/{relative}"


def _save(key: str, source: Path) -> None:
    # FileSystemStorage would pick another name rather than overwrite: make the key free first.
    if default_storage.exists(key):
        default_storage.delete(key)
    with source.open("rb") as handle:
        saved = default_storage.save(key, File(handle))
    if saved != key:
        raise ArtifactError(f"the storage saved {key} as {saved}")


def publish_artifact(path: Path) -> str | None:
    """Copy a file or folder under the data folder to the media storage; returns its key."""
    if not settings.KLONG_ARTIFACT_SYNC:
        return None
    path = Path(path)
    dir_key, file_key = _keys(path)
    if path.is_file():
        _save(file_key, path)
        return file_key
    if not path.is_dir():
        raise ArtifactError(f"nothing to publish at {path}")
    with tempfile.TemporaryDirectory(prefix="klong-publish-") as tmp:
        archive = Path(tmp) / "artifact.zip"
        # Stored, not deflated: checkpoints are weights, which do not compress.
        # strict_timestamps off: files extracted from a tar may carry mtime 0, before zip's 1980.
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED, allowZip64=True, strict_timestamps=False) as out:
            for file in sorted(path.rglob("*")):
                if file.is_file() and not file.is_symlink():
                    out.write(file, file.relative_to(path).as_posix())
        _save(dir_key, archive)
    log.info("published %s as %s", path, dir_key)
    return dir_key


def fetch_artifact(path: Path) -> bool:
    """Make sure ``path`` exists locally, downloading it from the media storage if another machine
    published it. Returns whether it exists now. Safe when several processes fetch at once."""
    path = Path(path)
    if path.exists() or not settings.KLONG_ARTIFACT_SYNC:
        return path.exists()
    dir_key, file_key = _keys(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".klong-fetch-", dir=path.parent) as tmp:
        staging = Path(tmp) / "artifact"
        if default_storage.exists(dir_key):
            archive = Path(tmp) / "artifact.zip"
            with default_storage.open(dir_key, "rb") as remote, archive.open("wb") as local:
                shutil.copyfileobj(remote, local, 1 << 20)
            with zipfile.ZipFile(archive) as zipped:
                for member in zipped.infolist():
                    # The archive is ours, but a bucket is writable by others: never write outside.
                    if not (staging / member.filename).resolve().is_relative_to(staging.resolve()):
                        raise ArtifactError(f"unsafe path {member.filename!r} in {dir_key}")
                zipped.extractall(staging)
            staging.mkdir(exist_ok=True)  # an empty folder zips to nothing
        elif default_storage.exists(file_key):
            with default_storage.open(file_key, "rb") as remote, staging.open("wb") as local:
                shutil.copyfileobj(remote, local, 1 << 20)
        else:
            return False
        try:
            # Atomic: a reader never sees half a folder; a concurrent fetch that won keeps its copy.
            staging.rename(path)
        except OSError:
            if not path.exists():
                raise
    log.info("fetched %s from the media storage", path)
    return True


def discard_artifact(path: Path) -> None:
    """Remove the storage copy of a file or folder that is no longer needed (an imported upload)."""
    if not settings.KLONG_ARTIFACT_SYNC:
        return
    for key in _keys(Path(path)):
        if default_storage.exists(key):
            default_storage.delete(key)
