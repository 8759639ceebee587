"""Training throughput on one accelerator: tokens/s, MFU and peak memory of an SFT step and of one RL
update, on Qwen2-family architectures with random weights (no download), bf16 compute.

    python bench/gpu/train_throughput.py              # ~0.5B and ~7B, windows of 8k and 32k (one H100/H200, < 10 min)
    python bench/gpu/train_throughput.py --tiny       # a 2-layer model, windows of 128/256: runs on a CPU

Each row: one window per step (batch 1), activation checkpointing on, SDPA attention.
- SFT step: forward + loss on every token + backward + optimizer step (transformers' own loss).
- RL update: ``rl_update.train_on_batch`` itself, the job's code: the old log-probs (a forward
  without gradients), then the clipped policy-gradient loss, backward and optimizer step, on one
  sub-trajectory whose second half carries the loss.
Optimizer: AdamW on fp32 master weights (bf16 autocast) where it fits on the card; where it does
not (7B: 16 bytes a parameter = 122 GB), the row says so and measures the same compute with bf16
weights and a stateless optimizer (SGD, lr 0): that is what one FSDP rank's compute costs, while
the memory of the sharded optimizer state is the arithmetic of docs/training-at-scale.md.

MFU = model FLOPs / (time x the card's peak dense bf16 FLOP/s): 6 N per trained token (2 N
forward + 4 N backward) plus causal attention 6 x layers x hidden x window, and 2 N more per token
for the RL update's old log-probs forward; recomputation under checkpointing is not counted.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from apps.trajectories.splitting import IGNORE_INDEX  # noqa: E402
from apps.trajectories.windows import Example  # noqa: E402
from worker.training.rl import RLSettings, Stage, SubTrajectory  # noqa: E402
from worker.training.rl_update import train_on_batch  # noqa: E402

# Dense bf16 peak of the cards we run on (vendor datasheets, SXM, without sparsity).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "B200": 2250e12, "L40S": 362e12}

# Qwen2.5-0.5B and Qwen2.5-7B shapes (their config.json), random weights.
SIZES = {
    "0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
             "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True},
    "7b": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
           "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 512, "tie_word_embeddings": True},
}


@dataclass
class Row:
    size: str
    window: int
    kind: str  # sft | rl
    mode: str  # adamw-fp32-master | bf16-sgd0 | oom
    tokens_per_s: float = math.nan
    mfu: float = math.nan
    peak_gib: float = math.nan

    def print(self, card: str) -> None:
        name = f"gpu_{self.kind}_{self.size}_{self.window // 1024 or self.window}{'k' if self.window >= 1024 else ''}"
        if self.mode == "oom":
            print(f"{name}_tokens_per_s: OOM (target: report; {card})", flush=True)
            return
        print(f"{name}_tokens_per_s: {self.tokens_per_s:.1f} tokens/s (target: report; {self.mode}, {card})", flush=True)
        mfu = "n/a" if math.isnan(self.mfu) else f"{100 * self.mfu:.1f}"
        print(f"{name}_mfu: {mfu} % (target: >= 30 on H100/H200; {card})", flush=True)
        print(f"{name}_peak_memory: {self.peak_gib:.2f} GiB (target: < card memory; {card})", flush=True)


def card_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def peak_flops(card: str) -> float:
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in card), math.nan)


def model_flops_per_token(config: Qwen2Config, window: int, n_params: int) -> float:
    embedding = config.vocab_size * config.hidden_size
    dense = n_params - (0 if config.tie_word_embeddings else embedding)  # the input embedding is a lookup
    return 6 * dense + 6 * config.num_hidden_layers * config.hidden_size * window


def peak_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB, the whole process


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(size: str, device: torch.device, master_fp32: bool) -> Qwen2ForCausalLM:
    config = Qwen2Config(**SIZES[size], max_position_embeddings=65536, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(torch.float32 if master_fp32 else torch.bfloat16)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    return model


def optimizer_for(model, mode: str):
    if mode == "adamw-fp32-master":
        return torch.optim.AdamW(model.parameters(), lr=1e-6, fused=next(model.parameters()).is_cuda)
    return torch.optim.SGD(model.parameters(), lr=0.0)  # no state: the compute without the optimizer's memory


def sft_step(model, optimizer, ids: torch.Tensor, autocast) -> None:
    with autocast:
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def rl_step(model, optimizer, subs, settings: RLSettings, autocast) -> None:
    with autocast:
        train_on_batch(model, None, optimizer, subs, settings, pad_id=0)


def measure(size: str, window: int, kind: str, device: torch.device, steps: int) -> Row:
    card = card_name(device)
    modes = ["adamw-fp32-master", "bf16-sgd0"] if device.type == "cuda" else ["adamw-fp32-master"]
    for mode in modes:
        model = optimizer = step = None
        try:
            reset_peak(device)
            model = build(size, device, master_fp32=mode == "adamw-fp32-master")
            optimizer = optimizer_for(model, mode)
            n_params = sum(p.numel() for p in model.parameters())
            autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
            generator = torch.Generator().manual_seed(window)
            ids = torch.randint(3, model.config.vocab_size, (1, window), generator=generator)
            if kind == "sft":
                step = partial(sft_step, model, optimizer, ids.to(device), autocast)
            else:
                row = ids[0].tolist()
                half = window // 2
                example = Example(0, row, [IGNORE_INDEX] * half + row[half:])
                subs = [SubTrajectory("task", 0, 0, 0, None, example, advantage=1.0)]
                settings = RLSettings(policy="random", output_dir=Path("."), stages=(Stage(1.0, 1),),
                                      minibatch_size=1, learning_rate=1e-6,
                                      precision="bf16" if device.type == "cuda" else "fp32")
                step = partial(rl_step, model, optimizer, subs, settings, autocast)
            step()  # warm-up: kernels chosen, optimizer state allocated
            sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                step()
            sync(device)
            elapsed = (time.perf_counter() - start) / steps
            # every token of the window goes through the forward and backward passes
            flops = model_flops_per_token(model.config, window, n_params) * window
            if kind == "rl":
                flops += 2 * n_params * window  # the old log-probs' forward
            return Row(size, window, kind, mode, window / elapsed, flops / elapsed / peak_flops(card),
                       peak_gib(device))
        except torch.OutOfMemoryError:
            continue
        finally:
            model = optimizer = step = None  # free the card before the next row
            reset_peak(device)
    return Row(size, window, kind, "oom")


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model and short windows (CPU)")
    parser.add_argument("--sizes", default="0.5b,7b")
    parser.add_argument("--windows", default="8192,32768")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=540.0, help="stop starting new rows after this long")
    args = parser.parse_args(argv)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    sizes = ["tiny"] if args.tiny else args.sizes.split(",")
    windows = [128, 256] if args.tiny else [int(w) for w in args.windows.split(",")]
    card = card_name(device)
    print(f"# card: {card}; torch {torch.__version__}", flush=True)
    if device.type == "cpu" and not args.tiny:
        print("# no GPU: the CPU runs the tiny sizes only (--tiny)", flush=True)
        sizes, windows = ["tiny"], [128, 256]
    started = time.perf_counter()
    rows = []
    for size in sizes:
        for window in windows:
            for kind in ("sft", "rl"):
                if time.perf_counter() - started > args.budget_s:
                    print(f"# budget spent: {size} {window} {kind} not run", flush=True)
                    continue
                row = measure(size, window, kind, device, args.steps)
                row.print(card)
                rows.append(row)
    return rows


if __name__ == "__main__":
    main()
