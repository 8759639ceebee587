"""Trajectory test data built in code: synthetic runs, JSONL files, a tiny local tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

from apps.trajectories.models import Trajectory, Turn
from apps.trajectories.tokens import EstimateCounter, turn_text

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "trajectories"


def make_trajectory(n_turns: int = 20, *, texts: dict[int, str] | None = None,
                    reasoning: dict[int, str] | None = None, **fields) -> Trajectory:
    """A run of system, user, then assistant tool-call / tool-result pairs (``reasoning``: of some turns)."""
    texts, reasoning = texts or {}, reasoning or {}
    trajectory = Trajectory.objects.create(title=fields.pop("title", "synthetic run"), **fields)
    turns = []
    for index in range(n_turns):
        if index == 0:
            role, calls = "system", []
        elif index == 1:
            role, calls = "user", []
        elif index % 2 == 0:
            role, calls = "assistant", [{"id": f"c{index}", "name": "bash", "arguments": {"cmd": "ls"}}]
        else:
            role, calls = "tool", []
        text = texts.get(index, f"turn {index} says {role} things")
        thought = reasoning.get(index, "")
        tokens = EstimateCounter().count([turn_text(text, thought, calls)])[0]
        turns.append(Turn(trajectory=trajectory, index=index, role=role, text=text, reasoning=thought, tool_calls=calls,
                          tool_call_id=f"c{index - 1}" if role == "tool" else "", token_count=tokens))
    Turn.objects.bulk_create(turns)
    trajectory.turn_count = n_turns
    trajectory.total_tokens = sum(t.token_count for t in turns)
    trajectory.save(update_fields=["turn_count", "total_tokens"])
    return trajectory


def klong_jsonl(path: Path, runs: list[list[dict]], *, bad_line: int | None = None) -> Path:
    """Write runs in our JSONL format; bad_line (1-based) replaces that line with broken JSON."""
    lines = []
    for number, turns in enumerate(runs):
        lines.append(json.dumps({"klong_trajectory": 1, "task": f"task-{number}", "model": "m"}))
        lines += [json.dumps(t) for t in turns]
    if bad_line is not None:
        lines[bad_line - 1] = '{"role": "assistant", "text": '
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_tokenizer(folder: Path) -> Path:
    """A byte-level BPE tokenizer with a ChatML template, trained in a second, saved as a HF folder."""
    from worker.training.tiny import build_tiny_tokenizer

    build_tiny_tokenizer(folder, vocab_size=300)
    return folder
