"""RL with the real agent: rollouts in bubblewrap sandboxes, the policy behind an inference server
(the loopback stub, scripted), judging through judge jobs on a real Celery worker."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from apps.jobs.models import Job
from apps.trajectories.models import Trajectory
from apps.trajectories.splitting import SplitConfig
from tests.judging.helpers import leaf, make_endpoint, make_paper_with_rubric, node
from tests.support.openai_stub import OpenAIStub, stub_score, tool_call
from worker.training.rl import Reporter, RLSettings, Stage, Task, train_rl
from worker.training.rl_agent import AgentRunner, PaperTask, QueueJudge
from worker.training.rl_drivers import DriverGroup
from worker.training.rl_serving import RemotePolicy, ServerConfig
from worker.training.tiny import build_tiny_model


def criteria(score: int, count: int) -> list[str]:
    """Leaf texts the stub judge scores ``score``: the test knows Q before judging."""
    texts = (f"The submission implements component {k} of the method" for k in range(100))
    return [t for t in texts if stub_score(t) == score][:count]


def policy_reply(body: dict) -> dict | None:
    """The served policy: write a file, then submit. Judge prompts get the stub's verdicts."""
    text = json.dumps(body["messages"])
    if "<criterion>" in text:
        return None
    if not any(m["role"] == "tool" for m in body["messages"]):
        return {"content": "", "tool_calls": [tool_call("write_file", "w1", file="result.txt", content="accuracy 0.91\n")]}
    return {"content": "Done.", "tool_calls": [tool_call("submit", "s1", end_message="result.txt")]}


class Points(Reporter):
    def __init__(self) -> None:
        self.points: list[dict] = []

    def metric(self, step: int, **values: float) -> None:
        self.points.append(values)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("drivers", [0, 2], ids=["threads", "driver-processes"])
def test_agent_rollouts_are_recorded_judged_through_the_queue_and_trained(personas, celery_worker, tmp_path, settings,
                                                                         drivers):
    policy_folder = build_tiny_model(tmp_path / "policy")
    yes, no = criteria(1, 2), criteria(0, 1)
    paper, version = make_paper_with_rubric("rl-paper", split="train", tree=node(
        "Reproduce", leaf(yes[0]), leaf(yes[1]), leaf(no[0], weight=2)))
    with OpenAIStub() as stub:
        stub.state.responder = policy_reply
        make_endpoint(stub.base_url, name="rl-judge")
        server = ServerConfig(base_url=stub.base_url, model="policy")
        judge = QueueJudge("rl-judge", user=personas["operator"])
        runner = AgentRunner(Path(settings.DATA_DIR), job_id=None, sandbox_backend="bwrap", max_steps=5)
        task = Task(paper.slug, PaperTask(paper.pk, paper.slug, paper.markdown, rubric_version=version.pk))
        points = Points()

        def make_policy(model, tokenizer, step):
            return RemotePolicy(server, tmp_path / "served", tokenizer, step)

        rl_settings = RLSettings(
            policy=str(policy_folder), output_dir=tmp_path / "out", stages=(Stage(60.0, 2),), n_rollouts=2,
            split=SplitConfig(l_max=700, prefix_end=1, overlap_turns=0, history_budget=64), learning_rate=1e-3, partial_rollouts=True,
        )
        started: list = []

        def make_drivers(tasks, runner, policy, states):  # the sessions in 2 other processes
            started.append(DriverGroup(drivers, 2, tasks, runner, policy, states))
            return started[-1]

        result = train_rl(rl_settings, [task], runner, judge, points, make_policy=make_policy,
                          make_drivers=make_drivers if drivers else None)
        reloads = list(stub.state.reloads)

    assert result["iterations"] == 2 and Path(result["final_path"], "config.json").is_file()
    # the served weights were reloaded at the start and after each update
    assert [Path(r["model_path"]).name for r in reloads] == ["policy-v0", "policy-v1", "policy-v2"]
    rollouts = Trajectory.objects.filter(source="rollout", paper=paper).order_by("pk")
    # the second batch ran while the first was judged and trained: by version 0, one update stale
    assert rollouts.count() == 4 and [t.policy_version for t in rollouts] == ["v0"] * 4
    assert [p["staleness"] for p in points.points] == [0.0, 1.0]
    assert all(not t.live for t in rollouts)
    judged = Job.objects.filter(pk__in=judge.jobs)
    assert judged.count() == 4 and {j.priority for j in judged} == {9}  # train papers queue after eval
    assert {j.state for j in judged} == {"succeeded"}
    expected = 2 / 4  # two of the three leaves pass, the failing one weighs 2
    assert [j.result["score"] for j in judged] == pytest.approx([expected] * 4)
    first = points.points[0]
    assert first["reward"] == pytest.approx(expected)  # every rollout ends on its submission
    # the windows before the write score 0, the ones after score the submission: a real spread
    assert first["advantage_std"] > 0 and first["advantage_min"] < 0 < first["advantage_max"]
    assert first["truncation_rate"] == 0.0
    assert all(r.meta["rl_job"] is None and r.meta["timeout_s"] == 60.0 for r in rollouts)
    if drivers:  # every session ran in the stage's driver processes, which are gone now
        assert len(started) == 1 and sum(started[0].sessions_per_driver().values()) == 4
        assert not any(psutil.pid_exists(pid) for pid in started[0].pids)
