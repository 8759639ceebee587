"""The API's parsers: DRF's, with the limits every untrusted body gets: no NUL character
(PostgreSQL cannot store one) and, for JSON, the depth limit.

Their own module: the settings name them in DEFAULT_PARSER_CLASSES, which DRF's views import.
"""

from __future__ import annotations

from typing import IO, Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.parsers import DataAndFiles
from rest_framework.utils import json as drf_json

from apps.core.errors import field_with_nul, nul_message
from apps.core.untrusted import JsonTooDeep, loads_json


class RefuseNulMixin:
    """A DRF parser that refuses a NUL anywhere in the body with a 400 naming the field.

    PostgreSQL cannot store NUL in text nor ``\\u0000`` in jsonb: serializers' text fields refuse
    it already, but JSON fields (configs, blacklists, trees) and values a view reads itself would
    reach the database with it. Files in a multipart body are not looked at: they are data.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        parsed = super().parse(stream, media_type, parser_context)
        field = field_with_nul(parsed.data if isinstance(parsed, DataAndFiles) else parsed)
        if field is not None:
            raise ParseError(nul_message(field))
        return parsed


class DepthLimitedJSONParser(parsers.JSONParser):
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


class JSONParser(RefuseNulMixin, DepthLimitedJSONParser):
    pass


class FormParser(RefuseNulMixin, parsers.FormParser):
    pass


class MultiPartParser(RefuseNulMixin, parsers.MultiPartParser):
    pass
