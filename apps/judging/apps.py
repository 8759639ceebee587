from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from apps.judging.llm.config import EndpointConfigError, KeyPolicy


class JudgingConfig(AppConfig):
    name = "apps.judging"
    label = "judging"

    def ready(self) -> None:
        # A key policy that would let endpoints send a server secret stops every process at start.
        try:
            KeyPolicy(settings.KLONG_ENDPOINT_KEY_PREFIX, frozenset(settings.KLONG_ENDPOINT_KEY_VARS)).check()
        except EndpointConfigError as exc:
            raise ImproperlyConfigured(str(exc)) from None
