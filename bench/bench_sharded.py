"""The sharded RL trainer against the 1-rank update, in the same run: parameters after the same
global batches on 2 and 4 ranks (DDP and FSDP2, gloo on this CPU) and on one rank (LocalTrainer).

The naive baseline is what plain DDP gives with the loss each rank computes on its own part: the
mean of the ranks' token means, where the 1-rank loss is the mean over all the minibatch's tokens.
Parts of different token counts make the two differ; the sharded trainer weights each part by its
share of the tokens, so it matches the 1-rank run to float noise.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import _django  # noqa: F401  (first: sets up Django on the embedded defaults)

from tests.support.subtrajectories import random_batch
from worker.training.rl import RLSettings, Stage
from worker.training.rl_update import LocalTrainer
from worker.training.sharded import ShardedTrainer, Sharding
from worker.training.tiny import build_tiny_model

UPDATES = 3


class NaiveShardedTrainer(ShardedTrainer):
    rank_module = "bench._naive_rank"


def max_diff(a, b) -> float:
    theirs = b.state_dict()
    return max(float((value - theirs[name]).abs().max()) for name, value in a.state_dict().items())


def figure(name: str, value: float, target: str) -> None:
    print(f"{name}: {value:.2e} max abs (target: {target})", flush=True)


def main() -> None:
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as folder:
        # an untied head, as 7B and larger: FSDP2 scores it in slices (docs/training-at-scale.md)
        model = build_tiny_model(Path(folder) / "policy", tied=False)
        tokenizer = AutoTokenizer.from_pretrained(model)
        settings = RLSettings(policy=str(model), output_dir=Path(folder) / "out", stages=(Stage(60.0, 1),),
                              learning_rate=1e-3, minibatch_size=4, seed=0, precision="fp32")
        batches = [random_batch(k, rows=8, shortest=16, longest=64) for k in range(UPDATES)]
        local = LocalTrainer(settings, tokenizer)
        local.start_stage(model, with_optimizer=False)
        for b in batches:
            local.update(b)
        diffs = {}
        for name, trainer_class, strategy, ranks in (
                ("ddp", ShardedTrainer, "ddp", 2), ("fsdp", ShardedTrainer, "fsdp", 2),
                ("naive", NaiveShardedTrainer, "ddp", 2),
                ("ddp4", ShardedTrainer, "ddp", 4), ("fsdp4", ShardedTrainer, "fsdp", 4)):
            with trainer_class(settings, tokenizer, Sharding(strategy, procs_per_node=ranks)) as sharded:
                sharded.start_stage(model, with_optimizer=False)
                for b in batches:
                    sharded.update(b)
            diffs[name] = max_diff(local.model, sharded.model)
    figure("sharded_2_ranks_max_param_diff_vs_1_rank", max(diffs["ddp"], diffs["fsdp"]), "< 1e-5")
    figure("sharded_2_ranks_ddp_max_param_diff_vs_1_rank", diffs["ddp"], "< 1e-5")
    figure("sharded_2_ranks_fsdp_max_param_diff_vs_1_rank", diffs["fsdp"], "< 1e-5")
    figure("sharded_4_ranks_ddp_max_param_diff_vs_1_rank", diffs["ddp4"], "< 1e-5")
    figure("sharded_4_ranks_fsdp_max_param_diff_vs_1_rank", diffs["fsdp4"], "< 1e-5")
    figure("sharded_2_ranks_mean_of_rank_means_max_param_diff_vs_1_rank_baseline", diffs["naive"],
           f"baseline: plain DDP on each rank's own token mean; {UPDATES} updates of 2 minibatches")


if __name__ == "__main__":
    main()
