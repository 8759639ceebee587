"""The static setup before issue 21, for the trajectory viewer's baseline: files straight from the
source folders under their plain names, uncompressed, a minute's cache (no collectstatic)."""

from klong_site.settings import *  # noqa: F403
from klong_site.settings import STORAGES

STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"}}
WHITENOISE_USE_FINDERS = True
