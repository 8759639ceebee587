"""The API's JSON parser: DRF's, with the limits every untrusted JSON input gets.

Its own module: the settings name it in DEFAULT_PARSER_CLASSES, which DRF's views import.
"""

from __future__ import annotations

from typing import IO, Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils import json as drf_json

from apps.core.untrusted import JsonTooDeep, loads_json


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser with the depth limit: JSON nested deeper than KLONG_MAX_JSON_DEPTH is a
    400 saying where (DRF's own ends in a RecursionError: a 500). The body is already bounded:
    DRF reads it through Django, which refuses one above KLONG_MAX_FORM_BYTES."""

    def parse(self, stream: IO[bytes], media_type: str | None = None, parser_context: dict | None = None) -> Any:
        data = stream.read()
        encoding = parsers.get_encoding(parser_context or {})
        try:
            return loads_json(data.decode(encoding), settings.KLONG_MAX_JSON_DEPTH,
                              parse_constant=drf_json.strict_constant if self.strict else None)
        except JsonTooDeep as exc:
            raise ParseError(str(exc)) from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
