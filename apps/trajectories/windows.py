"""Split trajectories into training examples with a model's own chat template.

Every turn is rendered alone with the tokenizer's chat template and tokenised; the split is
planned on those exact lengths (so every window fits l_max in real tokens) and each window
becomes ``input_ids`` plus ``labels`` that are -100 everywhere except the window's loss turns:
their content and end-of-turn tokens, never the role header. No Django here: the SFT engine,
the dataset export and the tests call the same function.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from apps.trajectories.splitting import (
    CUT_MARKER,
    IGNORE_INDEX,
    OMITTED_MARKER,
    SplitConfig,
    SplitManifest,
    TurnSpec,
    build_example,
    mentions_paper,
    plan_split,
)


@dataclass(frozen=True)
class TurnRow:
    role: str
    text: str
    no_loss: bool = False


@dataclass(frozen=True)
class Example:
    window: int
    input_ids: list[int]
    labels: list[int]

    @property
    def loss_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


class ChatTemplateTurns:
    """Per-turn token ids under a tokenizer's chat template, and where each turn's content starts."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._headers: dict[str, int] = {}

    def _render(self, role: str, text: str) -> list[int]:
        rendered = self.tokenizer.apply_chat_template([{"role": role, "content": text}], tokenize=False)
        return self.tokenizer.encode(rendered, add_special_tokens=False)

    def header_length(self, role: str) -> int:
        """Tokens before a turn's content: the common start of an empty and a non-empty turn."""
        if role not in self._headers:
            empty, full = self._render(role, ""), self._render(role, "x")
            n = 0
            while n < min(len(empty), len(full)) and empty[n] == full[n]:
                n += 1
            self._headers[role] = n
        return self._headers[role]

    def turn(self, role: str, text: str) -> tuple[list[int], int]:
        return self._render(role, text), self.header_length(role)

    def marker(self, template: str, limit: int, n: int) -> list[int]:
        # A marker longer than its reserved budget is clipped: the window must still fit l_max.
        return self.tokenizer.encode(template.format(n=n), add_special_tokens=False)[:limit]


def split_examples(
    rows: Sequence[TurnRow], config: SplitConfig, turns: ChatTemplateTurns
) -> tuple[SplitManifest, Iterator[Example]]:
    """The split manifest of one trajectory and its examples, one per window (lazily built)."""
    framed = [turns.turn(row.role, row.text) for row in rows]
    specs = [
        TurnSpec(i, row.role, len(ids), row.no_loss, mentions_paper(row.text))
        for i, (row, (ids, _start)) in enumerate(zip(rows, framed, strict=True))
    ]
    manifest = plan_split(specs, config)
    turn_ids = [ids for ids, _start in framed]
    loss_start = [start for _ids, start in framed]

    def cut_ids(n: int) -> list[int]:
        return turns.marker(CUT_MARKER, config.marker_tokens, n)

    def omitted_ids(n: int) -> list[int]:
        return turns.marker(OMITTED_MARKER, config.marker_tokens, n)

    def examples() -> Iterator[Example]:
        for window in manifest.windows:
            if not window.loss_turns:
                continue  # nothing to learn (an overlong observation alone): no example
            input_ids, labels = build_example(
                turn_ids, manifest, window.number,
                cut_marker_ids=cut_ids, omitted_marker_ids=omitted_ids, loss_start=loss_start,
            )
            yield Example(window.number, input_ids, labels)

    return manifest, examples()


def dataset_hash(manifest_hashes: Sequence[str], tokenizer_name: str) -> str:
    """One hash for a training set: which split manifests, tokenised by which tokenizer."""
    payload = json.dumps({"manifests": list(manifest_hashes), "tokenizer": tokenizer_name}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()
