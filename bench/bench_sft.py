"""Training throughput of split-SFT against plain SFTTrainer on the same tokens, in the same run.

Split-SFT trains on the windows of long trajectories (prefix + truncated history + targets);
the baseline is what plain SFT can do with the same trajectories: each one truncated to L_max.
Both go through TRL's SFTTrainer with the same small model, one epoch each; throughput is
tokens processed per second of training. No GPU here: a CPU figure; on a GPU machine the same
script reports that card's figure.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _django import line  # first: sets up Django on the embedded defaults

from apps.trajectories.chat_native import renderer_for
from apps.trajectories.splitting import IGNORE_INDEX, SplitConfig
from apps.trajectories.windows import Example, TurnRow, split_examples
from worker.training.sft import Reporter, SFTSettings, build_trainer
from worker.training.tiny import build_tiny_model

L_MAX = 512
ROUNDS = 3


def trajectory(seed: int, steps: int = 60) -> list[TurnRow]:
    rows = [TurnRow("system", "You are a research agent."), TurnRow("user", f"Reproduce paper {seed}.")]
    for i in range(steps):
        rows.append(TurnRow("assistant", f"Step {i}: python train.py --seed {seed} --lr 3e-4 && python eval.py"))
        rows.append(TurnRow("tool", f"epoch {i} loss {1 / (i + 1):.4f} accuracy {(i * 7 + seed) % 100}%\n" * 3))
    return rows


def plain_example(rows: list[TurnRow], tokenizer) -> Example:
    """Plain SFT: the whole conversation, assistant tokens trained, cut at L_max."""
    encoded = tokenizer.apply_chat_template(
        [{"role": r.role, "content": r.text} for r in rows], tokenize=True, return_dict=True,
        return_assistant_tokens_mask=True,
    )
    ids = encoded["input_ids"][:L_MAX]
    labels = [t if m else IGNORE_INDEX for t, m in zip(ids, encoded["assistant_masks"][:L_MAX], strict=True)]
    return Example(0, ids, labels)


def tokens_per_second(model: Path, examples: list[Example]) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as out:
        settings = SFTSettings(base_model=str(model), output_dir=Path(out), max_length=L_MAX, epochs=1,
                               batch_size=1, grad_accum=8, save_steps=10**6, logging_steps=10**6)
        trainer = build_trainer(examples, settings, Reporter())
        start = time.perf_counter()
        trainer.train()
        elapsed = time.perf_counter() - start
    tokens = sum(len(e.input_ids) for e in examples)
    return tokens / elapsed, tokens


def main() -> None:
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as folder:
        model = build_tiny_model(Path(folder), vocab_size=1024, hidden_size=256, layers=4)
        tokenizer = AutoTokenizer.from_pretrained(model)
        turns = renderer_for(tokenizer)
        split: list[Example] = []
        for seed in range(2):
            _manifest, windows = split_examples(trajectory(seed), SplitConfig(l_max=L_MAX, prefix_end=1), turns)
            split.extend(windows)
        split_tokens = sum(len(e.input_ids) for e in split)
        # The baseline gets as many tokens: as many truncated trajectories as it takes.
        plain: list[Example] = []
        seed = 0
        while sum(len(e.input_ids) for e in plain) < split_tokens:
            plain.append(plain_example(trajectory(seed), tokenizer))
            seed += 1
        tokens_per_second(model, plain[:8])  # warm-up: first-call costs belong to neither side
        # Alternate the two and keep each side's best, so a burst of load elsewhere on the
        # machine does not decide the ratio.
        plain_runs, split_runs = [], []
        for _ in range(ROUNDS):
            plain_runs.append(tokens_per_second(model, plain)[0])
            split_runs.append(tokens_per_second(model, split)[0])
        plain_tps, split_tps = max(plain_runs), max(split_runs)
        plain_tokens = sum(len(e.input_ids) for e in plain)
    line("sft_split_tokens_per_s_cpu", split_tps, "tokens/s", f"ratio >= 0.95 of plain; {split_tokens} tokens")
    line("sft_plain_tokens_per_s_cpu_baseline", plain_tps, "tokens/s", f"baseline; {plain_tokens} tokens")
    print(f"sft_split_vs_plain_throughput: {split_tps / plain_tps:.2f} ratio (target: >= 0.95)", flush=True)


if __name__ == "__main__":
    main()
