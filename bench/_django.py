"""Shared start of every benchmark that needs Django: the embedded defaults in a fresh data folder.

Import it first (``import _django  # noqa: F401``): it sets the environment and calls
django.setup(), so nothing a developer has configured (DATABASE_URL, REDIS_URL) is touched.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for _name in ("DATABASE_URL", "REDIS_URL"):
    os.environ.pop(_name, None)
os.environ["KLONG_DATA_DIR"] = tempfile.mkdtemp(prefix="klong-bench-")
os.environ["DJANGO_SETTINGS_MODULE"] = "klong_site.settings"
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()


def line(name: str, value: float, unit: str, target: str) -> None:
    """One figure, in the form every benchmark prints."""
    print(f"{name}: {value:.1f} {unit} (target: {target})", flush=True)


def timed_ms(func, repeat: int) -> list[float]:
    """Wall time of ``repeat`` calls, in milliseconds each."""
    import time

    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        samples.append((time.perf_counter() - start) * 1000)
    return samples
