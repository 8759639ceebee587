"""Split plan of a synthetic 1,000-turn, ~2M-token trajectory (target: under 20 ms).

Pure code, no Django: it times ``plan_split`` (windows, history, loss turns and the content
hash) from token counts only, best of N. The baseline, measured in the same run, is the
same call on the trajectory's first 100 turns: a planner with work over the history that
grows with the trajectory would show a ratio near 100x instead of near 10x.
A stress line at L_max = 8k (about one window per step) shows the cost per window.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apps.trajectories.splitting import SplitConfig, TurnSpec, plan_split  # noqa: E402

TARGET_MS = 20.0
TURNS = 1000


def synthetic_trajectory(n_turns: int, seed: int = 0) -> list[TurnSpec]:
    """A PaperBench-like run: system + task, a paper-reading phase, then steps.

    Actions average ~800 tokens, tool outputs ~3,200 with a heavy tail (1 in 200 is a
    50k-token dump, longer than a 32k window, so the overlong path is exercised).
    """
    rng = random.Random(seed)
    turns = [TurnSpec(0, "system", 1500), TurnSpec(1, "user", 2500)]
    for _ in range(3):  # cat /home/paper/paper.md, in pages
        turns.append(TurnSpec(len(turns), "assistant", 120, reads_paper=True))
        turns.append(TurnSpec(len(turns), "tool", 3000, reads_paper=True))
    while len(turns) < n_turns:
        if len(turns) % 2 == 0:
            turns.append(TurnSpec(len(turns), "assistant", rng.randint(100, 1500)))
            continue
        roll = rng.random()
        if roll < 0.005:
            tokens = 50_000
        elif roll < 0.1:
            tokens = rng.randint(5000, 20000)
        else:
            tokens = rng.randint(200, 4000)
        turns.append(TurnSpec(len(turns), "tool", tokens))
    return turns


def best_ms(func: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main() -> None:
    turns = synthetic_trajectory(TURNS)
    total = sum(t.tokens for t in turns)
    config = SplitConfig()  # the defaults: L_max 32k, overlap 2 turns, history 25%
    manifest = plan_split(turns, config)
    head = turns[: TURNS // 10]

    full_ms = best_ms(lambda: plan_split(turns, config), repeat=50)
    head_ms = best_ms(lambda: plan_split(head, config), repeat=200)
    stress = SplitConfig(l_max=8192)
    stress_windows = len(plan_split(turns, stress).windows)
    stress_ms = best_ms(lambda: plan_split(turns, stress), repeat=30)

    print(
        f"# trajectory: {len(turns)} turns, {total:,} tokens; default config: "
        f"{len(manifest.windows)} windows, "
        f"{sum(w.overlong for w in manifest.windows)} overlong, prefix through turn "
        f"{manifest.prefix_end}"
    )
    print(f"split_plan_{TURNS}_turns: {full_ms:.1f} ms (target: < {TARGET_MS:.0f} ms)")
    print(f"split_plan_{len(head)}_turns: {head_ms:.2f} ms (baseline: first 100 turns)")
    print(f"split_plan_scaling_{TURNS}_vs_{len(head)}: {full_ms / head_ms:.1f}x (linear: ~10x, quadratic: ~100x)")
    print(
        f"split_plan_{TURNS}_turns_l_max_8k: {stress_ms:.1f} ms "
        f"({stress_windows} windows; target: < {TARGET_MS:.0f} ms)"
    )


if __name__ == "__main__":
    main()
