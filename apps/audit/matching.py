"""Match the leaves of one rubric tree to another's (pure Python, no Django).

Used when human grades made on one tree (a PaperBench judge_eval file, an older rubric
version) must land on the leaves of another. First by id: leaves sharing an id pair up in
pre-order (real trees repeat ids). Then, for the leaves left over, by requirement text with
whitespace collapsed, only where a text appears the same number of times on both sides, so an
ambiguous text never guesses. The rest is reported as unmatched, never forced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from apps.rubrics.paperbench import FlatNode, leaf_mask


@dataclass(slots=True)
class LeafMatch:
    pairs: dict[int, int] = field(default_factory=dict)  # source index -> target index
    by_id: int = 0
    by_text: int = 0
    unmatched_source: list[int] = field(default_factory=list)
    unmatched_target: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"matched": len(self.pairs), "by_id": self.by_id, "by_text": self.by_text,
                "unmatched_source": len(self.unmatched_source), "unmatched_target": len(self.unmatched_target)}


def requirement_key(text: Any) -> str:
    return " ".join(str(text or "").split()).casefold()


def _group(nodes: Sequence[FlatNode], indexes: list[int], key) -> dict[Any, list[int]]:
    groups: dict[Any, list[int]] = {}
    for i in indexes:
        groups.setdefault(key(nodes[i]), []).append(i)
    return groups


def match_leaves(target: Sequence[FlatNode], source: Sequence[FlatNode]) -> LeafMatch:
    target_leaves = [i for i, leaf in enumerate(leaf_mask(list(target))) if leaf]
    source_leaves = [i for i, leaf in enumerate(leaf_mask(list(source))) if leaf]
    result = LeafMatch()

    def node_key(n: FlatNode) -> Any:
        return n.node_id if isinstance(n.node_id, (str, int)) else repr(n.node_id)

    target_ids = _group(target, target_leaves, node_key)
    for key, sources in _group(source, source_leaves, node_key).items():
        for s, t in zip(sources, target_ids.get(key, []), strict=False):
            result.pairs[s] = t
            result.by_id += 1

    used = set(result.pairs.values())
    left_source = [i for i in source_leaves if i not in result.pairs]
    left_target = [i for i in target_leaves if i not in used]
    target_texts = _group(target, left_target, lambda n: requirement_key(n.requirements))
    for text, sources in _group(source, left_source, lambda n: requirement_key(n.requirements)).items():
        targets = target_texts.get(text, [])
        if text and len(sources) == len(targets):
            for s, t in zip(sources, targets, strict=True):
                result.pairs[s] = t
                result.by_text += 1

    used = set(result.pairs.values())
    result.unmatched_source = [i for i in source_leaves if i not in result.pairs]
    result.unmatched_target = [i for i in target_leaves if i not in used]
    return result
