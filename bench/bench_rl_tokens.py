"""Token-in/token-out RL: the share of sampled assistant turns whose trained ids are exactly the
ids the policy sampled, against the re-render way (decode the sample, render the window's text,
tokenise it again) measured on the same rollouts in the same run.

Toy rollouts of the tiny policy (random weights sample byte-level BPE pieces in orders the
tokenizer would never produce, the way a real policy's samples sometimes re-tokenise differently,
and always do for a tool call the server parsed into JSON with its own call id). CPU here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _django import line  # first: sets up Django on the embedded defaults

from apps.trajectories.chat_native import renderer_for
from apps.trajectories.splitting import SplitConfig
from apps.trajectories.windows import TurnRow, loss_runs, split_examples
from worker.training.rl import LocalPolicy
from worker.training.rl_toy import ToyRunner, toy_tasks
from worker.training.tiny import build_tiny_model

ROLLOUTS = 16
SPLIT = SplitConfig(l_max=512, prefix_end=1, overlap_turns=1, history_budget=128, marker_tokens=8, snippet_min_tokens=4)


def trained_outputs(example, stops: set[int]) -> list[tuple[int, ...]]:
    """Each target run of an example, up to and including its end-of-turn token (what was sampled)."""
    out = []
    for start, end in loss_runs(example.labels):
        run = example.labels[start:end]
        last = max((k for k, t in enumerate(run) if t in stops), default=len(run) - 1)
        out.append(tuple(run[: last + 1]))
    return out


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        model_dir = build_tiny_model(Path(folder) / "policy")
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        policy = LocalPolicy(AutoModelForCausalLM.from_pretrained(model_dir), tokenizer)
    renderer = renderer_for(tokenizer)
    stops = {tokenizer.eos_token_id}
    [task] = toy_tasks(1, max_turns=4, tokens_per_turn=12)
    counts = {"sampled": [0, 0], "re-render": [0, 0]}  # [equal, total]
    for k in range(ROLLOUTS):
        rollout = ToyRunner().run(task, k, 1e9, policy, seed=k)
        sampled = {tuple(t.token_ids) for t in rollout.turns if t.token_ids}
        for way, rows in (("sampled", rollout.turns), ("re-render", [TurnRow(t.role, t.text) for t in rollout.turns])):
            _, examples = split_examples(rows, SPLIT, renderer)
            for example in examples:
                for run in trained_outputs(example, stops):
                    counts[way][0] += run in sampled
                    counts[way][1] += 1
    for way, (equal, total) in counts.items():
        share = 100.0 * equal / max(1, total)
        if way == "sampled":
            line("rl_trained_ids_equal_sampled", share, "%", f">= 100; {total} trained turns")
        else:
            line("rl_trained_ids_equal_sampled_rerender", share, "%", "baseline: re-render and re-tokenise")


if __name__ == "__main__":
    main()
