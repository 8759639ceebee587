"""Structured logs: one JSON object per line (``LOG_FORMAT=json``), for Loki, Elasticsearch,
CloudWatch and the like. No Django import: the logging config loads it before apps are ready."""

from __future__ import annotations

import json
import logging
import os
import socket
from datetime import UTC, datetime

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is kept as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_HOST = socket.gethostname()


class JsonFormatter(logging.Formatter):
    """time, level, logger, message, host, pid, plus the ``extra`` fields and the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "host": _HOST,
            "pid": os.getpid(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        # default=str: an odd ``extra`` value (a Path, a model) must never break logging.
        return json.dumps(entry, default=str, ensure_ascii=False)
