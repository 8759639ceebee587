"""A rank of the sharded trainer with the naive loss: each rank's own token mean, averaged over the
ranks as DDP does, without weighting each part by its share of the minibatch's tokens. The
baseline of bench_sharded.py, never used by a job."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from worker.training import sharded_rank


class MeanOfRankMeans(sharded_rank.RankShard):
    def scale(self, loss, mask):
        return loss


if __name__ == "__main__":
    sharded_rank.RankShard = MeanOfRankMeans  # RankTrainer builds its shard from the module's name
    sharded_rank.main(Path(sys.argv[1]))
    sys.stdout.flush()
    os._exit(0)
