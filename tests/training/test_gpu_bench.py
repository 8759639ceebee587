"""bench/gpu/train_throughput.py runs on this CPU at tiny sizes, so the GPU script cannot rot."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu" / "train_throughput.py"


def test_the_gpu_throughput_script_measures_sft_and_the_rl_update_at_tiny_sizes(capsys):
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script  # dataclasses look their module up there
    spec.loader.exec_module(script)
    rows = script.main(["--tiny", "--steps", "1"])
    assert [(r.kind, r.window) for r in rows] == [("sft", 128), ("rl", 128), ("sft", 256), ("rl", 256)]
    assert all(r.mode == "adamw-fp32-master" and r.tokens_per_s > 0 and r.peak_gib > 0 for r in rows)
    assert all(math.isnan(r.mfu) for r in rows)  # no peak FLOP/s known for a CPU: printed n/a, not made up
    out = capsys.readouterr().out
    assert out.startswith("# card: cpu") and "gpu_rl_tiny_256_tokens_per_s: " in out
    assert "gpu_sft_tiny_128_mfu: n/a % (target: >= 30 on H100/H200; cpu)" in out
    # the real rows' arithmetic: ~0.5B parameters, 6 N + attention per token
    config = script.Qwen2Config(**script.SIZES["0.5b"])
    flops = script.model_flops_per_token(config, 8192, 494_032_768)
    assert 6 * 494_032_768 < flops < 6 * 494_032_768 + 6 * 24 * 896 * 8192 + 1
