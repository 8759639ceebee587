"""Token counts per turn: a local tokenizer when one is configured, else a labelled estimate.

No Django here: the import service picks the counter from settings, the benchmark and the
split exporter call the same classes.

Rule for what is counted (both counters): the turn's reasoning, text and tool calls (as JSON)
joined by newlines, plus MESSAGE_OVERHEAD tokens for the chat template's role markers
(ChatML spends about 4 per message: ``<|im_start|>``, the role, a newline, ``<|im_end|>``).
The estimate is ceil(characters / 4) for that text, the usual rule of thumb for English and
code under BPE tokenizers; trajectories counted that way store ``tokenizer == ""`` and every
page shows their counts as estimates.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

MESSAGE_OVERHEAD = 4
CHARS_PER_TOKEN = 4


def turn_text(text: str, reasoning: str = "", tool_calls: Sequence[dict[str, Any]] = ()) -> str:
    """The text of a turn that the model sees, as counted (chat-template markers aside)."""
    parts = [reasoning, text]
    parts += [json.dumps(call, ensure_ascii=False, sort_keys=True) for call in tool_calls]
    return "\n".join(p for p in parts if p)


class TokenCounter(Protocol):
    #: The tokenizer's name as stored on Trajectory.tokenizer; "" for the estimate.
    name: str

    def count(self, texts: Sequence[str]) -> list[int]: ...


class EstimateCounter:
    """ceil(chars / 4) + MESSAGE_OVERHEAD: no tokenizer needed, labelled as an estimate."""

    name = ""

    def count(self, texts: Sequence[str]) -> list[int]:
        return [math.ceil(len(t) / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD for t in texts]


class TokenizerCounter:
    """Exact counts from a local Hugging Face tokenizer folder (never the hub)."""

    def __init__(self, path: str | Path) -> None:
        # lazy: transformers only when a tokenizer is configured (seconds to import)
        from transformers import AutoTokenizer

        self.path = Path(path)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        self.name = self.tokenizer.name_or_path and Path(self.tokenizer.name_or_path).name or "local"
        # The Rust tokenizer's own batch encode, without the Python wrapper's padding and
        # tensor plumbing: counting a large import is then as fast as the library allows.
        self._backend = getattr(self.tokenizer, "backend_tokenizer", None) or getattr(
            self.tokenizer, "_tokenizer", None
        )

    def count(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        if self._backend is not None:
            encodings = self._backend.encode_batch(list(texts), add_special_tokens=False)
            return [len(e.ids) + MESSAGE_OVERHEAD for e in encodings]
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [len(x) + MESSAGE_OVERHEAD for x in ids]

    def encode(self, text: str) -> list[int]:
        if self._backend is not None:
            return list(self._backend.encode(text, add_special_tokens=False).ids)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


@lru_cache(maxsize=4)
def counter_for(path: str) -> TokenCounter:
    """The counter for a tokenizer folder ("" = the estimate), loaded once per process."""
    if not path:
        return EstimateCounter()
    return TokenizerCounter(path)
