"""Precision: how much of a bf16 checkpoint one RL update at the default learning rate moves.

The tiny policy saved in bf16 (as real checkpoints ship), one batch of toy rollouts judged and
given advantages, then one update at lr 1e-6 two ways on the same batch:
- ours: ``rl_update.load_model`` (fp32 master weights) under bf16 autocast;
- the naive way: the checkpoint loaded as transformers 5 does with no dtype (bf16 parameters),
  AdamW stepping them in pure bf16.
The figure is the share of weights whose value differs from the checkpoint's after the update.
CPU here; the arithmetic (bf16 spacing against a 1e-6 step) is the same on a GPU.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from apps.trajectories.chat_native import renderer_for  # noqa: E402
from apps.trajectories.splitting import SplitConfig  # noqa: E402
from worker.training.rl import (  # noqa: E402
    LocalPolicy,
    RLSettings,
    Stage,
    assign_advantages,
    judge_subtrajectories,
    split_rollout,
)
from worker.training.rl_toy import ToyJudge, ToyRunner, toy_tasks  # noqa: E402
from worker.training.rl_update import load_model, train_on_batch  # noqa: E402
from worker.training.tiny import build_tiny_model  # noqa: E402

SPLIT = SplitConfig(l_max=96, prefix_end=1, overlap_turns=1, history_budget=24, marker_tokens=8, snippet_min_tokens=4)


def changed_share(before: dict[str, torch.Tensor], model) -> float:
    after = {k: v.detach().float() for k, v in model.state_dict().items()}
    changed = sum(int((before[k] != after[k]).sum()) for k in before)
    return changed / sum(v.numel() for v in before.values())


def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        base = build_tiny_model(Path(folder) / "fp32")
        bf16 = Path(folder) / "bf16"
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16).save_pretrained(bf16)
        tokenizer = AutoTokenizer.from_pretrained(base)
        tokenizer.save_pretrained(bf16)
        settings = RLSettings(policy=str(bf16), output_dir=Path(folder) / "out", stages=(Stage(1500.0, 1),),
                              split=SPLIT, learning_rate=1e-6, minibatch_size=64, precision="bf16")
        tasks = toy_tasks(2, max_turns=3, tokens_per_turn=6)
        policy = LocalPolicy(load_model(bf16, "cpu", precision="fp32", trainable=False), tokenizer)
        rollouts = [ToyRunner().run(task, j, 1500.0, policy, seed=10 * t + j)
                    for t, task in enumerate(tasks) for j in range(4)]
        turns = renderer_for(tokenizer)
        subs = [s for r in rollouts for s in split_rollout(r, SPLIT, turns)]
        judge_subtrajectories(subs, {t.id: t for t in tasks}, ToyJudge())
        assign_advantages(subs)
        pad = tokenizer.pad_token_id
        checkpoint = {k: v.detach().float() for k, v in
                      AutoModelForCausalLM.from_pretrained(bf16).state_dict().items()}

        ours = load_model(bf16, "cpu", precision="bf16")
        train_on_batch(ours, None, torch.optim.AdamW(ours.parameters(), lr=1e-6, weight_decay=0.0), subs, settings, pad)
        naive = AutoModelForCausalLM.from_pretrained(bf16)  # transformers 5 with no dtype: the bf16 parameters
        assert next(naive.parameters()).dtype == torch.bfloat16
        train_on_batch(naive, None, torch.optim.AdamW(naive.parameters(), lr=1e-6, weight_decay=0.0), subs,
                       dataclasses.replace(settings, precision="fp32"), pad)
    print(f"# {len(subs)} sub-trajectories, lr 1e-6, one AdamW step; naive: bf16 parameters stepped in bf16")
    print(f"bf16_weights_changed_after_one_update_naive: {100 * changed_share(checkpoint, naive):.1f} % "
          "(target: baseline)", flush=True)
    print(f"bf16_weights_changed_after_one_update: {100 * changed_share(checkpoint, ours):.1f} % (target: >= 99)",
          flush=True)


if __name__ == "__main__":
    main()
