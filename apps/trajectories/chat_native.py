"""Chat formats that ship their own renderer instead of a Jinja template. Pure: no Django.

Filled in below: Mistral (mistral-common) and gpt-oss (openai-harmony).
"""

from __future__ import annotations

from pathlib import Path

from apps.trajectories.windows import ChatRenderer


def native_renderer(folder: Path) -> ChatRenderer | None:
    return None
