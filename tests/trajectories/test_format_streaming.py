"""Streaming: large trajectory files are read piece by piece, never whole."""

from __future__ import annotations

import io
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from apps.trajectories.formats import read_trajectories
from apps.trajectories.formats.detect import HEAD_BYTES, detect_format
from apps.trajectories.formats.jsonstream import (
    JsonSyntaxError,
    iter_document,
    load_document,
)


class CountingReader(io.BytesIO):
    """A file that remembers how far it has been read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.furthest = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.furthest = self.tell()
        return chunk


def peak_bytes(action: Any) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_array_items_are_handed_out_before_the_file_is_read_to_the_end() -> None:
    items = [{"n": i, "blob": "x" * 100_000} for i in range(20)]
    data = json.dumps({"head": 1, "samples": items}).encode()
    fp = CountingReader(data)
    stream = iter_document(fp, stream=("samples",))
    events = [next(stream)]
    while events[-1][0] != "item":
        events.append(next(stream))
    assert events[-1][1:] == (0, items[0])
    assert fp.furthest < len(data) // 4


def test_top_level_fields_before_the_streamed_array_are_reported_first() -> None:
    data = json.dumps({"eval": {"model": "m"}, "samples": [1, 2], "tail": True}).encode()
    events = list(iter_document(io.BytesIO(data), stream=("samples",)))
    assert events[:3] == [("top", "eval", {"model": "m"}), ("item", 0, 1), ("item", 1, 2)]
    assert events[-1] == ("root", None, {"eval": {"model": "m"}, "samples": [], "tail": True})


def test_skipped_values_are_left_out_and_keep_their_neighbours_indices() -> None:
    data = json.dumps({"keep": [{"a": 1, "drop": [1, 2]}, {"a": 2}], "drop": {"big": "x"}}).encode()
    document = load_document(io.BytesIO(data), skip=lambda path: path[-1] == "drop")
    assert document == {"keep": [{"a": 1}, {"a": 2}]}


def test_syntax_error_names_the_json_path_with_indices() -> None:
    data = b'{"messages": [{"role": "user"}, {"role": "assistant", "content": "tru'
    with pytest.raises(JsonSyntaxError) as caught:
        load_document(io.BytesIO(data))
    assert caught.value.path == ("messages", 1, "content")
    assert "truncated" in caught.value.message


def test_numbers_are_floats_not_decimals() -> None:
    assert load_document(io.BytesIO(b'{"cost": 0.5}')) == {"cost": 0.5}
    assert type(load_document(io.BytesIO(b'{"cost": 0.5}'))["cost"]) is float


def test_swe_agent_step_copies_are_never_held_in_memory(tmp_path: Path) -> None:
    history = [{"role": "system", "content": "s"}] + [
        {"role": "assistant" if i % 2 else "user", "content": f"turn {i}"} for i in range(40)
    ]
    # Each step repeats a 200 KB message list, as SWE-agent does: 8 MB the reader must skip.
    step = {
        "action": "ls",
        "observation": "",
        "response": "",
        "thought": "",
        "messages": [{"content": "y" * 200_000}],
    }
    path = tmp_path / "big.traj"
    path.write_text(
        json.dumps({"environment": "e", "trajectory": [step] * 40, "history": history, "info": {}})
    )
    runs: list[Any] = []
    peak = peak_bytes(lambda: runs.extend(read_trajectories(path)))
    assert len(runs[0].turns) == len(history)
    assert peak < path.stat().st_size // 4


def test_inspect_json_log_is_read_one_sample_at_a_time(tmp_path: Path) -> None:
    samples = [
        {
            "id": i,
            "epoch": 1,
            "messages": [{"role": "user", "content": "z" * 400_000}],
            "events": [],
        }
        for i in range(12)
    ]
    path = tmp_path / "log.json"
    path.write_text(
        json.dumps({"version": 2, "eval": {"task": "t", "model": "m"}, "samples": samples})
    )
    sizes: list[int] = []
    peak = peak_bytes(
        lambda: sizes.extend(len(run.turns[0].text) for run in read_trajectories(path))
    )
    assert sizes == [400_000] * 12
    assert peak < path.stat().st_size // 3


def test_detection_reads_only_the_start_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.traj.json"
    head = '{"info": {}, "messages": [{"role": "system", "content": "s"}'
    # Whatever follows the first HEAD_BYTES (here: not even JSON) does not change the answer.
    path.write_text(
        head + "," + '{"role": "user", "content": "' + "q" * HEAD_BYTES + '"}' + "!!! not json"
    )
    assert detect_format(path) == "mini-swe-agent"
