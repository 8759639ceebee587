"""Random sub-trajectories for the RL update's tests and benchmark: windows of different lengths
and loss spans, so the ranks of a sharded update get parts of different token counts."""

from __future__ import annotations

import random

from apps.trajectories.splitting import IGNORE_INDEX
from apps.trajectories.windows import Example
from worker.training.rl import SubTrajectory


def random_batch(seed: int, rows: int, shortest: int = 10, longest: int = 30, vocab: int = 400) -> list[SubTrajectory]:
    rng = random.Random(seed)
    out = []
    for i in range(rows):
        ids = [rng.randrange(3, vocab) for _ in range(rng.randint(shortest, longest))]
        cut = rng.randint(2, len(ids) - 3)  # the loss starts part-way, as after a window's history
        example = Example(0, ids, [IGNORE_INDEX] * cut + ids[cut:])
        out.append(SubTrajectory("task", i, 0, 0, None, example, advantage=rng.uniform(-1, 1)))
    return out
