"""Turn a judge model's free-text answer into {valid_score, score, explanation} (pure Python).

The answer is asked to end with a JSON object; models wrap it in code fences, add prose after
it, or forget it and only write "Score: 1". Tried in order: the last JSON object that has a
"score" key, then the last "Score: 0/1" line or heading. Anything else is a ``ParseError``:
the caller retries and finally marks the leaf invalid, never 0.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_SCORE_LINE = re.compile(r"(?im)^[ \t>*#_-]*score[ \t*_]*(?:[:=][ \t*_]*|\n[ \t*_]*)([01](?:\.0+)?)\b")


class ParseError(ValueError):
    """The answer holds no usable 0/1 verdict."""


@dataclass(frozen=True, slots=True)
class Judgement:
    valid_score: bool
    score: int
    explanation: str


def _score(value: Any) -> int:
    if isinstance(value, bool):
        raise ParseError(f"score must be 0 or 1, got {value!r}")
    if isinstance(value, str):
        value = value.strip()
        try:
            value = float(value)
        except ValueError:
            raise ParseError(f"score must be 0 or 1, got {value!r}") from None
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    raise ParseError(f"score must be 0 or 1, got {value!r}")


def _valid(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ParseError(f"valid_score must be true or false, got {value!r}")


def _json_objects(text: str) -> list[dict[str, Any]]:
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    for match in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(obj, dict) and "score" in obj:
            found.append(obj)
    return found


def parse_judgement(text: str | None) -> Judgement:
    if text is None or not text.strip():
        raise ParseError("the answer is empty")
    objects = _json_objects(text)
    if objects:
        obj = objects[-1]
        explanation = obj.get("explanation")
        if not isinstance(explanation, str) or not explanation.strip():
            explanation = text[: text.rfind("{")].strip() or text.strip()
        return Judgement(_valid(obj.get("valid_score")), _score(obj["score"]), explanation[:8000])
    lines = _SCORE_LINE.findall(text)
    if lines:
        return Judgement(True, _score(lines[-1]), text.strip()[:8000])
    snippet = " ".join(text.split())[:120]
    raise ParseError(f"no score (0 or 1) found in the answer: {snippet!r}")
