"""``python -m worker.training.rl_driver_process FD``: one rollout driver process (rl_drivers).

It takes the job's settings over the socket ``FD`` before Django starts (the database a test
uses, the job's overrides), and only then imports what uses the models: the order every
standalone Django script keeps, here at the module's top level under ``__main__``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from multiprocessing.connection import Connection

import django
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "klong_site.settings")


def boot(conn: Connection) -> None:
    """The job's settings first (no database connection is open yet), then Django."""
    kind, shared = conn.recv()
    if kind != "boot":
        raise SystemExit("a rollout driver starts with its settings")
    for name, value in shared.items():
        setattr(settings, name, value)
    django.setup()


if __name__ == "__main__":
    connection = Connection(int(sys.argv[1]))
    boot(connection)
    from worker.training.rl_drivers import serve  # uses the models: after setup

    try:
        serve(connection)
    except Exception as exc:  # noqa: BLE001 - told to the job's process, which names it
        with contextlib.suppress(OSError):
            connection.send(("error", f"{type(exc).__name__}: {exc}"[:2000]))
        raise
