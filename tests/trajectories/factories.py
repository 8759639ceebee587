"""Trajectory test data built in code: synthetic runs, JSONL files, a tiny local tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def inspect_eval(path: Path, members: dict[str, Any], *, method: int = 93, frame_bytes: int = 0) -> Path:
    """An Inspect .eval written the way inspect-ai 0.3.285 writes it (zipfile + zipfile_zstd, its
    recorder's ``zipfile_compress_kwargs``): every member JSON (indent 2) compressed with zstd,
    method 93, version 63, streamed, so no frame declares its size; with ``frame_bytes`` a new frame
    starts every that many input bytes, as inspect's multi-frame compressor does past 200 MiB.
    ``method`` 8 deflates instead, as inspect-ai did before; any other number writes the zstd data
    under that method, for archives nobody can read."""
    import struct
    import zlib

    import zstandard

    out, central = bytearray(), bytearray()
    for name, value in members.items():
        raw = value if isinstance(value, bytes) else json.dumps(value, indent=2).encode()
        if method == 8:
            deflate = zlib.compressobj(5, zlib.DEFLATED, -15)
            data = deflate.compress(raw) + deflate.flush()
        else:
            step = frame_bytes or len(raw) or 1
            data = b"".join(_zstd_frame(zstandard, raw[i:i + step]) for i in range(0, max(len(raw), 1), step))
        encoded, crc, offset = name.encode(), zlib.crc32(raw), len(out)
        version = 20 if method == 8 else 63
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", version, 0, method, 0, 0x21, crc, len(data), len(raw),
                           len(encoded), 0) + encoded + data
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", version, version, 0, method, 0, 0x21, crc, len(data),
                               len(raw), len(encoded), 0, 0, 0, 0, 0o600 << 16, offset) + encoded
    start = len(out)
    out += central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), start, 0)
    path.write_bytes(bytes(out))
    return path


def _zstd_frame(zstandard: Any, data: bytes) -> bytes:
    # compressobj, as zipfile_zstd's compressor: the frame header leaves the content size out.
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    return compressor.compress(data) + compressor.flush()


def codex_rollout(path: Path, *, patch: str = "*** Begin Patch\n*** End Patch\n") -> Path:
    """A Codex CLI session as codex-rs 0.46 writes it to ~/.codex/sessions: wrapped rollout lines,
    the terminal's event_msg lines repeating the messages and calls, a reasoning summary before a
    shell call, an apply_patch custom tool call, token counts and the end of the task."""
    def at(second: int) -> str:
        return f"2025-10-02T10:00:{second:02d}.000Z"

    def item(second: int, kind: str, payload: dict) -> dict:
        return {"timestamp": at(second), "type": kind, "payload": payload}

    shell_args = json.dumps({"command": ["bash", "-lc", "python train.py"], "workdir": "/w"})
    output = json.dumps({"output": "epoch 1 loss 0.3\n", "metadata": {"exit_code": 0, "duration_seconds": 1.5}})
    usage = {"input_tokens": 5000, "cached_input_tokens": 0, "output_tokens": 400, "reasoning_output_tokens": 100,
             "total_tokens": 5400}
    lines = [
        item(0, "session_meta", {"id": "0199a213-81c0-7800-8aa1-bbab2a035a53", "timestamp": at(0), "cwd": "/w",
                                 "originator": "codex_cli_rs", "cli_version": "0.46.0", "instructions": None,
                                 "source": "cli", "model_provider": "openai",
                                 "git": {"commit_hash": "abc", "branch": "main"}}),
        item(1, "response_item", {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "<environment_context>\n  <cwd>/w</cwd>\n</environment_context>"}]}),
        item(1, "response_item", {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Reproduce table 2 of the paper\nStart with train.py."}]}),
        item(1, "event_msg", {"type": "user_message", "message": "Reproduce table 2 of the paper", "images": []}),
        item(1, "turn_context", {"cwd": "/w", "approval_policy": "never", "sandbox_policy": {"mode": "danger-full-access"},
                                 "model": "gpt-5-codex", "effort": "medium", "summary": "auto"}),
        item(2, "event_msg", {"type": "agent_reasoning", "text": "**Running the training script**"}),
        item(2, "response_item", {"type": "reasoning", "summary": [
            {"type": "summary_text", "text": "**Running the training script**"}], "content": None,
            "encrypted_content": "gAAAAABo3...encrypted"}),
        item(3, "response_item", {"type": "function_call", "name": "shell", "arguments": shell_args,
                                  "call_id": "call_1"}),
        item(3, "event_msg", {"type": "token_count", "info": {"total_token_usage": usage, "last_token_usage": usage,
                                                              "model_context_window": 272000}, "rate_limits": None}),
        item(5, "event_msg", {"type": "exec_command_end", "call_id": "call_1", "stdout": "epoch 1 loss 0.3\n",
                              "stderr": "", "aggregated_output": "epoch 1 loss 0.3\n", "exit_code": 0,
                              "duration": {"secs": 1, "nanos": 500000000}, "formatted_output": "epoch 1 loss 0.3\n"}),
        item(5, "response_item", {"type": "function_call_output", "call_id": "call_1", "output": output}),
        item(6, "response_item", {"type": "custom_tool_call", "status": "completed", "call_id": "call_2",
                                  "name": "apply_patch", "input": patch}),
        item(6, "event_msg", {"type": "patch_apply_end", "call_id": "call_2", "stdout": "Success.", "stderr": "",
                              "success": True}),
        item(6, "response_item", {"type": "custom_tool_call_output", "call_id": "call_2",
                                  "output": json.dumps({"output": "Success. Updated the following files:\nM train.py\n",
                                                        "metadata": {"exit_code": 0, "duration_seconds": 0.0}})}),
        item(7, "event_msg", {"type": "agent_message", "message": "Done: lr is now 3e-4."}),
        item(7, "response_item", {"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": "Done: lr is now 3e-4."}]}),
        item(7, "event_msg", {"type": "token_count", "info": {"total_token_usage": usage, "last_token_usage": usage,
                                                              "model_context_window": 272000}, "rate_limits": None}),
        item(8, "event_msg", {"type": "task_complete", "last_agent_message": "Done: lr is now 3e-4."}),
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


INSPECT_HEADER = {"version": 2, "status": "success",
                  "eval": {"eval_id": "e1", "run_id": "r1", "task": "oxdna_simple", "task_id": "t1",
                           "model": "openai/gpt-5", "config": {"epochs": 6}}}


def inspect_sample(epoch: int, value: str) -> dict:
    """One Inspect sample (id "default") of that epoch, scored with a letter grade."""
    return {
        "id": "default", "epoch": epoch, "uuid": f"u{epoch}",
        "messages": [{"role": "user", "content": "Fix the oxDNA input files."},
                     {"role": "assistant", "content": f"Attempt {epoch}: fixed the temperature.", "id": f"m{epoch}"}],
        "output": {"model": "gpt-5", "choices": [{"message": {"role": "assistant", "content": "done"}}]},
        "scores": {"oxdna_scorer": {"value": value, "explanation": "checked the energy"}},
        "metadata": {"family": "oxdna_simple", "difficulty": "9 minutes"},
    }


def epochs_eval(path: Path, **kwargs: Any) -> Path:
    """An Inspect .eval (zstd, as inspect-ai 0.3.285 writes it) of one sample run for six epochs, as METR's
    oxdna_simple task is run."""
    members = {"_journal/start.json": {"version": 2, "eval": INSPECT_HEADER["eval"]},
               "header.json": INSPECT_HEADER}
    for epoch in range(1, 7):
        members[f"samples/default_epoch_{epoch}.json"] = inspect_sample(epoch, "C" if epoch % 2 else "I")
    return inspect_eval(path, members, **kwargs)
