"""The data folder, made when the app starts (settings only read files): the folder itself, the
collected static files' folder (whitenoise warns about a missing one), and on a single machine the
secret key, generated once (mode 600) and kept for every later start."""

from __future__ import annotations

import os
import secrets

from django.conf import settings


def prepare_data_folder() -> None:
    settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
    settings.STATIC_ROOT.mkdir(parents=True, exist_ok=True)
    if not settings.SECRET_KEY_MISSING:
        return
    key_file = settings.SECRET_KEY_FILE
    try:
        # O_EXCL: of two processes starting at once (web and worker) one writes, the other reads.
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(50))
    settings.SECRET_KEY = key_file.read_text().strip()
