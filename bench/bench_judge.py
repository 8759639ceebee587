"""Judge throughput: grade a 2,000-leaf tree at concurrency 100 against a loopback model server
that answers after a fixed delay, and compare with the ideal time (leaves x delay / concurrency).

The server runs in its own process (tests/support/openai_stub.py), so its work does not share
this process's GIL with the judge. The judge is pure Python, so no Django set-up is needed.
Baseline in the same run: the same 2,000 calls made by the bare client with no judge around it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from apps.judging.judge.grader import JudgeSettings, grade_tree  # noqa: E402
from apps.judging.judge.prompts import PaperContext  # noqa: E402
from apps.judging.judge.submission import Submission  # noqa: E402
from apps.judging.llm import ChatClient, EndpointConfig  # noqa: E402
from apps.rubrics.paperbench import flatten  # noqa: E402

LEAVES = 2000
CONCURRENCY = 100
DELAY_S = 0.5
WORDS = ["dataset", "loader", "model", "training", "optimiser", "schedule", "evaluation", "metric", "table", "figure", "ablation", "baseline"]


def line(name: str, value: float, unit: str, target: str) -> None:
    print(f"{name}: {value:.2f} {unit} (target: {target})", flush=True)


def make_tree(leaves: int, per_group: int = 50) -> dict:
    groups = []
    for g in range(leaves // per_group):
        kids = []
        for i in range(per_group):
            words = " ".join(WORDS[(g + i + k) % len(WORDS)] for k in range(4))
            category = ("Code Development", "Code Execution", "Result Analysis")[i % 3]
            kids.append({"id": f"{g}-{i}", "requirements": f"Criterion {g}.{i}: the {words} is reproduced",
                         "weight": 1 + i % 3, "sub_tasks": [], "task_category": category})
        groups.append({"id": f"g{g}", "requirements": f"Part {g}", "weight": 1, "sub_tasks": kids,
                       "task_category": None})
    return {"id": "root", "requirements": "Reproduce the paper", "weight": 1, "sub_tasks": groups,
            "task_category": None}


def make_submission(folder: Path) -> Submission:
    for i, word in enumerate(WORDS):
        (folder / f"{word}.py").write_text(f"# {word}\n" + f"def {word}_{i}():\n    return {i}\n" * 40)
    (folder / "README.md").write_text("# Reproduction\n" + " ".join(WORDS) * 20)
    (folder / "reproduce.sh").write_text("python training.py\n")
    (folder / "reproduce.log").write_text("step 1\n" * 200)
    (folder / "results.csv").write_text("metric,value\naccuracy,0.9\n")
    return Submission(folder)


def start_server(delay: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.openai_stub", "--delay", str(delay)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def main() -> None:
    proc, base_url = start_server(DELAY_S)
    try:
        config = EndpointConfig(name="bench-stub", base_url=base_url, model="stub", concurrency=CONCURRENCY,
                                max_retries=2, timeout_s=30)
        paper = PaperContext("Bench paper", "# Bench paper\n" + ("We study " + " ".join(WORDS) + ".\n") * 40)
        with tempfile.TemporaryDirectory() as tmp:
            submission = make_submission(Path(tmp))
            nodes = flatten(make_tree(LEAVES))
            client = ChatClient(config)
            # Warm-up: open the pooled connections so the figure measures steady-state grading.
            grade_tree(flatten(make_tree(CONCURRENCY, per_group=CONCURRENCY)), paper, submission, client)
            started = time.perf_counter()
            outcome = grade_tree(nodes, paper, submission, client, JudgeSettings())
            measured = time.perf_counter() - started
            baseline = bare_client(client)
        assert len(outcome.results) == LEAVES and outcome.n_invalid == 0, outcome.totals()
        ideal = LEAVES * DELAY_S / CONCURRENCY
        print(f"judge_efficiency_2000_leaves_c100: {ideal / measured:.2f} ratio (target: >= 0.8)", flush=True)
        line("judge_ideal_time_2000_leaves_c100", ideal, "s", f"leaves x {DELAY_S} s delay / {CONCURRENCY}")
        line("judge_measured_time_2000_leaves_c100", measured, "s", f"<= {ideal / 0.8:.1f} s")
        line("bare_client_time_2000_calls_c100_baseline", baseline, "s", "baseline")
        print(f"judge_efficiency_vs_bare_client: {baseline / measured:.2f} ratio", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def bare_client(client: ChatClient) -> float:
    messages = [{"role": "user", "content": "x" * 2000}]
    lock = threading.Lock()
    done = [0]

    def call(_: int) -> None:
        client.chat(messages)
        with lock:
            done[0] += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(call, range(LEAVES)))
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
