"""Progressive RL: time per iteration split into rollout, judging and training, with and without
partial rollouts, in the same run.

The toy task on a tiny policy (rollouts generate on this worker with transformers), judged by
a model judge through PaperBench's leaf-by-leaf protocol against the loopback OpenAI-compatible
stub in its own process (a fixed delay per call stands for a remote judge's latency). Without
partial rollouts an iteration is rollout + judging + training; with them the next batch's
rollouts run while this batch is judged and trained, so the trainer waits only for what is not
ready yet. The first iteration of each run (nothing prefetched yet) is left out of the means.
CPU figures here; on a GPU machine the same script reports that card's.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _django import ROOT, line  # first: sets up Django on the embedded defaults

from apps.judging.llm.client import make_client
from apps.judging.llm.config import EndpointConfig
from apps.trajectories.splitting import SplitConfig
from worker.training.rl import Reporter, RLSettings, Stage, train_rl
from worker.training.rl_toy import ModelJudge, ToyRunner, toy_tasks
from worker.training.tiny import build_tiny_model

ITERATIONS = 5
ROUNDS = 2
JUDGE_DELAY_S = 0.04
PARTS = ("time_iteration_s", "time_rollout_s", "time_generate_s", "time_judge_s", "time_train_s")


class Times(Reporter):
    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def metric(self, step: int, **values: float) -> None:
        self.rows.append(values)


def run(model: Path, out: Path, judge: ModelJudge, partial: bool) -> dict[str, float]:
    settings = RLSettings(
        policy=str(model), output_dir=out, stages=(Stage(3000.0, ITERATIONS),), n_rollouts=4,
        split=SplitConfig(l_max=128, prefix_end=1, overlap_turns=1, history_budget=32, marker_tokens=8,
                          snippet_min_tokens=4),
        learning_rate=1e-2, minibatch_size=16, partial_rollouts=partial, max_staleness=1,
    )
    times = Times()
    train_rl(settings, toy_tasks(2, max_turns=4, tokens_per_turn=12), ToyRunner(), judge, times)
    return {part: statistics.mean(row[part] for row in times.rows[1:]) for part in PARTS}


def main() -> None:
    import torch

    # One intra-op thread for both modes: on a tiny model OpenMP's fork/join per op costs more
    # than it saves, and on shared cores it would time the scheduler rather than the overlap.
    torch.set_num_threads(1)
    stub = subprocess.Popen([sys.executable, "-m", "tests.support.openai_stub", "--delay", str(JUDGE_DELAY_S)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        base_url = stub.stdout.readline().strip()
        client = make_client(EndpointConfig(name="stub-judge", model="stub-model", base_url=base_url, concurrency=16))
        judge = ModelJudge(client, concurrency=4)
        with tempfile.TemporaryDirectory() as folder:
            model = build_tiny_model(Path(folder) / "policy", hidden_size=64, layers=2)
            results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
            # Alternate the two and keep each side's fastest, so load elsewhere does not decide it.
            for k in range(ROUNDS):
                for partial in (False, True):
                    results[partial].append(run(model, Path(folder) / f"out-{k}-{partial}", judge, partial))
    finally:
        stub.terminate()
        stub.wait()
    best = {p: min(rows, key=lambda r: r["time_iteration_s"]) for p, rows in results.items()}
    for partial, label in ((False, "sequential"), (True, "partial")):
        b = best[partial]
        for part in PARTS:
            name = part.removeprefix("time_").removesuffix("_s")
            target = "baseline" if not partial else ("< sequential" if part == "time_iteration_s" else "split")
            line(f"rl_{label}_{name}_ms", b[part] * 1000, "ms", target)
    ratio = best[True]["time_iteration_s"] / best[False]["time_iteration_s"]
    print(f"rl_partial_vs_sequential_iteration: {ratio:.2f} ratio (target: < 1.0; "
          f"judge delay {JUDGE_DELAY_S * 1000:.0f} ms per call)", flush=True)


if __name__ == "__main__":
    main()
