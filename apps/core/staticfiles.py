"""Static files collected, fingerprinted and compressed (whitenoise's CompressedManifestStaticFilesStorage).

Pages link every static file under a name carrying a hash of its content, which whitenoise serves
gzip-compressed with a year's cache: plotly.min.js (4.6 MB) travels as 1.4 MB, once. That needs
``collectstatic`` before the server starts (the manifest maps names to hashed names); ``prepare``
runs it only when a source file changed since the last collection, so `make run`, the test
session and the benchmarks pay a few seconds once and nothing afterwards. The deploy image
collects at build time.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
from importlib import metadata
from pathlib import Path

import django
from django.apps import apps
from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.management import call_command

FINGERPRINT = ".klong-static-fingerprint"
MANIFEST = "staticfiles.json"


def source_fingerprint() -> str:
    """A hash of every file collectstatic would copy (name, size, modification time) and of the
    storage that processes them."""
    ignore = apps.get_app_config("staticfiles").ignore_patterns
    entries = []
    for finder in finders.get_finders():
        for path, storage in finder.list(ignore):
            stat = Path(storage.path(path)).stat()
            entries.append(f"{getattr(storage, 'prefix', '') or ''}/{path}\t{stat.st_size}\t{stat.st_mtime_ns}")
    entries.sort()
    entries.append(json.dumps([settings.STORAGES["staticfiles"], django.__version__, metadata.version("whitenoise")]))
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


def prepare(verbosity: int = 0) -> bool:
    """Collect the static files into STATIC_ROOT unless they are already there, up to date.

    Returns whether it collected. A lock keeps two processes sharing the folder (parallel test
    runs, a web server and a worker starting together) from writing it at once.
    """
    root = Path(settings.STATIC_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fingerprint = source_fingerprint()
        stamp = root / FINGERPRINT
        if (root / MANIFEST).is_file() and stamp.is_file() and stamp.read_text() == fingerprint:
            return False
        call_command("collectstatic", interactive=False, verbosity=verbosity, stdout=io.StringIO())
        stamp.write_text(fingerprint)
        return True
