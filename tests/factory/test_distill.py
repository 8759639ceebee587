"""End-to-end distillation on a toy paper: a loopback teacher solves (or botches, or cheats on) a
toy task through real tool calls in real bubblewrap sandboxes; the judge (programmatic leaves plus
a model leaf) runs through the judge queue; rejection sampling keeps the good run as a dataset
that the SFT job can select. Run by a real Celery worker."""

from __future__ import annotations

import json
import time

import pytest

from apps.datasets.models import Dataset
from apps.datasets.sampling import RunScore, histogram, select_runs, summarise
from apps.jobs.models import Job
from apps.judging.models import JudgeRun, RubricCheck
from apps.papers.models import Paper
from apps.rubrics.services.versions import create_version
from apps.trajectories.models import Trajectory
from tests.factory.conftest import make_endpoint
from tests.judging.helpers import leaf, node

GOOD = "def add(a, b):\n    return a + b\n"
BAD = "def add(a, b):\n    return a - b\n"
OFFICIAL = "https://github.com/toy-lab/official-add"


def test_rejection_sampling_keeps_threshold_passers_up_to_top_k_and_never_flagged_or_unjudged_runs():
    runs = [RunScore("p", 0, 0.9), RunScore("p", 1, 0.95), RunScore("p", 2, 0.9, cost_usd=1.0),
            RunScore("p", 3, None), RunScore("p", 4, 1.0, flagged=True), RunScore("q", 0, 0.2)]
    verdicts = select_runs(runs, threshold=0.5, top_k=2)
    assert [k for k, v in verdicts.items() if v.kept] == [("p", 1), ("p", 0)]
    assert verdicts[("p", 2)].reason == "rank 3 of its paper, beyond top-2"
    assert verdicts[("p", 4)].reason.startswith("disqualified") and verdicts[("p", 3)].reason == "not judged"
    assert verdicts[("q", 0)].reason == "score 0.200 < threshold 0.5"
    assert [k for k, v in select_runs(runs, None, 1).items() if v.kept] == [("p", 1), ("q", 0)]
    summary = summarise(runs, verdicts)
    assert (summary["kept"], summary["judged"], summary["acceptance_rate"]) == (2, 5, 2 / 6)
    assert summary["cost_usd"] == 1.0 and histogram([0.0, 0.95, 1.0, 0.5]) == [1, 0, 0, 0, 0, 1, 0, 0, 0, 2]


def call(name: str, **arguments) -> dict:
    return {"content": f"Calling {name}.", "tool_calls": [
        {"id": f"call-{name}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}]}


class ScriptedTeacher:
    """The teacher's answers, one script per run in order (so the jobs run one at a time: concurrency 1):
    write solution.py, run it, submit.
    Judge prompts (a <criterion>) fall through to the stub's own verdicts."""

    def __init__(self, plans: list[str]) -> None:
        self.plans = plans
        self.run = -1

    def __call__(self, body: dict):
        messages = body["messages"]
        if any("<criterion>" in str(m.get("content", "")) for m in messages):
            return None
        step = sum(1 for m in messages if m.get("role") == "assistant")
        if step == 0:
            self.run += 1
        plan = self.plans[self.run]
        if plan == "cheat" and step == 0:
            return call("bash", cmd=f"git clone {OFFICIAL} /tmp/official")
        if step == 0:
            return call("write_file", file="solution.py", content=GOOD if plan == "good" else BAD)
        if step == 1:
            return call("bash", cmd="python3 -c 'import solution; print(solution.add(2, 3))'")
        return call("submit", end_message="done")


@pytest.fixture
def toy_paper(transactional_db):
    paper = Paper.objects.create(slug="toy-add", title="Toy addition", split=Paper.Split.TRAIN,
                                 markdown="# Toy addition\nImplement add(a, b) in solution.py.", blacklist=[OFFICIAL])
    works, exists = leaf("add(2, 3) returns 5", weight=3), leaf("solution.py defines add", weight=3)
    tree = node("Reproduce toy addition", works, exists, leaf("The code is readable", weight=1))
    create_version(paper, message="curated", tree=tree)
    RubricCheck.objects.create(paper=paper, node_id=works["id"],
                               command="python3 -c 'import solution; assert solution.add(2, 3) == 5'")
    RubricCheck.objects.create(paper=paper, node_id=exists["id"], command="grep -q 'def add' solution.py")
    return paper


def wait_for(job_id: int, timeout_s: float = 30.0) -> Job:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = Job.objects.get(pk=job_id)
        if job.is_finished:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job.state}: {job.message}")


def test_a_distillation_keeps_the_good_run_rejects_the_bad_and_the_cheat_and_feeds_sft(
        toy_paper, stub, personas, client_for, celery_worker, tmp_path):
    stub.state.responder = ScriptedTeacher(["good", "bad", "cheat"])
    make_endpoint("teacher", stub)
    make_endpoint("judge", stub)
    api = client_for("operator")
    config = {"papers": "toy-add", "teacher": "teacher", "judge": "judge", "concurrency": 1, "runs_per_paper": 3, "threshold": 0.8,
              "dataset": "toy-distilled", "sandbox_backend": "bwrap", "max_steps": 6, "time_limit_s": 60,
              "l_max": 4096, "tool_timeout_s": 20, "judge_help_after_s": 0.5}
    answer = api.post("/api/jobs/", {"kind": "distill", "config": config}, content_type="application/json")
    assert answer.status_code in (201, 202), answer.content
    job = wait_for(answer.json()["id"])
    assert job.state == "succeeded", job.error
    result = job.result
    assert (result["runs"], result["judged"], result["kept"]) == (3, 3, 1), json.dumps(result["runs_detail"][2])
    good, bad, cheat = sorted(result["runs_detail"], key=lambda r: r["index"])
    assert good["kept"] and good["score"] >= 0.8 and good["end_state"] == "submitted"
    assert not bad["kept"] and bad["score"] < 0.8 and "< threshold 0.8" in bad["reason"]
    assert cheat["flagged"] and cheat["score"] == 0.0 and not cheat["kept"]
    # Each submission was graded by a judge job at the train priority, its checks run for real.
    judge_jobs = Job.objects.filter(kind="judge").order_by("pk")
    assert [(j.priority, j.queue, j.state) for j in judge_jobs] == [(9, "judge", "succeeded")] * 2
    runs = {r.trajectory_id: r for r in JudgeRun.objects.all()}
    assert runs[good["trajectory"]].score == good["score"] and runs[bad["trajectory"]].score == bad["score"]
    assert result["cost_usd"] > 0 and result["acceptance_rate"] == pytest.approx(1 / 3)
    live = {name: sorted(job.metrics.filter(name=name).values_list("value", flat=True))
            for name in ("score", "cost_usd", "teacher_cost_usd", "acceptance_rate")}
    assert live["score"] == sorted([good["score"], bad["score"]]) and live["acceptance_rate"] == [pytest.approx(1 / 3)]
    assert max(live["cost_usd"]) == pytest.approx(result["cost_usd"]) and len(live["teacher_cost_usd"]) == 3
    # Kept and rejected trajectories, every turn saved, the tool calls among them.
    kept = Trajectory.objects.get(pk=good["trajectory"])
    assert (kept.review, kept.source, kept.final_score) == ("accepted", "distilled", good["score"])
    assert kept.turns.filter(role="tool").count() >= 3 and kept.turns.filter(tool_calls__isnull=False).exists()
    assert Trajectory.objects.get(pk=bad["trajectory"]).review == "rejected"
    assert OFFICIAL in Trajectory.objects.get(pk=cheat["trajectory"]).review_reason
    dataset = Dataset.objects.get(name="toy-distilled")
    assert list(dataset.trajectories.values_list("pk", flat=True)) == [good["trajectory"]]
    assert dataset.origin_job_id == job.pk and dataset.threshold == 0.8
    page = api.get(f"/jobs/{job.pk}/").content.decode()
    assert 'id="distill-acceptance">33%' in page and 'data-score-histogram="distill-histogram"' in page
    # The SFT job selects the dataset by name, and only its trajectories.
    from apps.jobs.services.launching import validate_config
    from worker.engines.sft import select_trajectories

    assert 'value="toy-distilled"' in api.get("/jobs/new/?kind=sft").content.decode()
    model = tmp_path / "model"  # the form only checks that a model folder is there
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "tokenizer.json").write_text("{}")
    sft = validate_config("sft", {"dataset": "toy-distilled", "base_model": str(model)})
    assert [t.pk for t in select_trajectories(sft)] == [good["trajectory"]]



def test_cancelling_a_distillation_stops_the_agent_mid_run_and_keeps_its_turns(
        toy_paper, stub, client_for, celery_worker):
    def busy_teacher(body: dict):
        if any("<criterion>" in str(m.get("content", "")) for m in body["messages"]):
            return None
        return call("bash", cmd="sleep 0.2; echo still working")

    stub.state.responder = busy_teacher
    make_endpoint("teacher", stub)
    make_endpoint("judge", stub)
    api = client_for("operator")
    config = {"papers": "toy-add", "teacher": "teacher", "judge": "judge", "concurrency": 1, "runs_per_paper": 2, "top_k": 1,
              "threshold": None, "dataset": "never", "sandbox_backend": "bwrap", "max_steps": 200, "l_max": 4096}
    job_id = api.post("/api/jobs/", {"kind": "distill", "config": config}, content_type="application/json").json()["id"]
    deadline = time.monotonic() + 20
    while not Trajectory.objects.filter(turn_count__gte=4).exists():
        assert time.monotonic() < deadline, "the teacher never got going"
        time.sleep(0.1)
    assert api.post(f"/api/jobs/{job_id}/cancel/").status_code in (200, 202)
    job = wait_for(job_id, 20)
    assert job.state == "cancelled"
    trajectory = Trajectory.objects.get()  # the second run never started
    assert trajectory.end_state == "cancelled" and not trajectory.live and trajectory.turns.count() >= 4
    assert not Dataset.objects.exists() and not Job.objects.filter(kind="judge").exists()


def test_a_retried_distillation_resumes_after_its_last_finished_run(toy_paper, stub, personas, celery_worker):
    from django.conf import settings

    from apps.jobs.services.launching import validate_config
    from worker.tasks import run_job

    teacher = ScriptedTeacher(["bad"])  # only the run that never finished is run again
    stub.state.responder = teacher
    make_endpoint("teacher", stub)
    make_endpoint("judge", stub)
    finished = Trajectory.objects.create(paper=toy_paper, title="run 1", source="distilled", end_state="submitted")
    folder = settings.DATA_DIR / "submissions" / "resumed-run-1"
    folder.mkdir(parents=True)
    (folder / "solution.py").write_text(GOOD)
    record = {"paper": "toy-add", "index": 0, "trajectory": finished.pk, "submission": "submissions/resumed-run-1",
              "error": "", "end_state": "submitted", "steps": 3, "flagged": False, "teacher_cost_usd": 0.5}
    config = validate_config("distill", {
        "papers": "toy-add", "teacher": "teacher", "judge": "judge", "concurrency": 1, "runs_per_paper": 2, "threshold": 0.8,
        "dataset": "resumed", "sandbox_backend": "bwrap", "max_steps": 6, "l_max": 4096, "judge_help_after_s": 0})
    # As a worker that died after the first run leaves it once the retry has re-queued it.
    job = Job.objects.create(kind="distill", config=config, queue="cpu", attempt=1, created_by=personas["operator"],
                             checkpoint={"step": 1, "runs": [record]})
    run_job(job.pk)
    job.refresh_from_db()
    assert job.state == "succeeded", job.error
    assert teacher.run == 0 and Trajectory.objects.count() == 2
    kept = [r["trajectory"] for r in job.result["runs_detail"] if r["kept"]]
    assert kept == [finished.pk] and job.result["judged"] == 2
    assert job.result["cost_usd"] > 0.5


# What a thinking teacher reasons before each answer; the first one is also hostile markup.
THOUGHTS = ["The paper asks for add(a, b): <b>write</b> solution.py first.",
            "Check it: add(2, 3) should print 5.", "It printed 5, so the submission is complete."]


class ThinkingTeacher(ScriptedTeacher):
    """The same answers, each with its reasoning beside it, as vLLM's reasoning parsers and DeepSeek
    return it (``reasoning_content``) or OpenRouter and newer vLLM (``reasoning``)."""

    def __call__(self, body: dict):
        answer = super().__call__(body)
        if answer is None:
            return None
        step = sum(1 for m in body["messages"] if m.get("role") == "assistant")
        return {**answer, ("reasoning" if step == 1 else "reasoning_content"): THOUGHTS[step]}


@pytest.mark.browser
def test_a_thinking_teachers_reasoning_is_kept_shown_and_trained_on_or_left_out(
        toy_paper, stub, personas, client_for, celery_worker, page, live_server, browser_login, tmp_path):
    from transformers import AutoTokenizer

    from apps.jobs.services.launching import JobConfigError, validate_config
    from apps.trajectories.splitting import IGNORE_INDEX
    from tests.support.chat_families import build_family_tokenizer
    from worker.engines.sft import build_examples

    stub.state.responder = ThinkingTeacher(["good"])
    make_endpoint("teacher", stub)
    make_endpoint("judge", stub)
    config = {"papers": "toy-add", "teacher": "teacher", "judge": "judge", "runs_per_paper": 1, "threshold": 0.8,
              "dataset": "thinking", "sandbox_backend": "bwrap", "max_steps": 6, "time_limit_s": 60, "l_max": 4096,
              "tool_timeout_s": 20, "judge_help_after_s": 0.5}
    answer = client_for("operator").post("/api/jobs/", {"kind": "distill", "config": config},
                                         content_type="application/json")
    job = wait_for(answer.json()["id"])
    assert job.state == "succeeded" and job.result["kept"] == 1, job.error or job.result
    # The distilled trajectory keeps each answer's reasoning, whichever field it came in.
    trajectory = Trajectory.objects.get(datasets__name="thinking")
    answers = list(trajectory.turns.filter(role="assistant").order_by("index"))
    assert [turn.reasoning for turn in answers] == THOUGHTS
    # The viewer shows it folded away above the answer, as text.
    browser_login(personas["viewer"])
    page.goto(f"{live_server.url}/trajectories/{trajectory.pk}/")
    shown = page.locator(f"#turn-{answers[0].index} details.turn-reasoning")
    shown.wait_for()
    assert shown.get_attribute("open") is None and not shown.locator("pre").is_visible()
    shown.locator("summary").click()
    assert shown.locator("pre").inner_text() == THOUGHTS[0] and shown.locator("pre b").count() == 0
    # SFT on a Qwen3 base: by default each turn's reasoning is trained on in its <think> block; off, none of it.
    model = tmp_path / "qwen3"
    tokenizer = build_family_tokenizer(model, "qwen3")
    (model / "config.json").write_text("{}")
    for choice, kept in ((None, True), (False, False)):
        sft = validate_config("sft", {"dataset": "thinking", "base_model": str(model), "l_max": 4096,
                                      **({} if choice is None else {"train_on_reasoning": choice})})
        examples, _hashes, ids = build_examples(sft, AutoTokenizer.from_pretrained(model))
        assert ids == [trajectory.pk] and examples
        trained = "".join(tokenizer.decode([t for t in e.labels if t != IGNORE_INDEX]) for e in examples)
        seen = "".join(tokenizer.decode(e.input_ids) for e in examples)
        for thought in THOUGHTS:
            assert (f"<think>\n{thought}\n</think>\n\n" in trained) is kept and (thought in seen) is kept
        assert 'Calling submit.\n<tool_call>\n{"name": "submit"' in trained and ("<think>" in trained) is kept
    with pytest.raises(JobConfigError, match="not yes or no"):
        validate_config("sft", {"dataset": "thinking", "base_model": str(model), "train_on_reasoning": "maybe"})


def test_a_distillation_none_of_whose_runs_could_be_judged_fails_with_the_reason_and_retry_judges_again(
        toy_paper, stub, personas):
    from django.conf import settings

    from apps.jobs.services.launching import validate_config
    from worker.tasks import run_job

    RubricCheck.objects.all().delete()  # every leaf is the model's to grade
    make_endpoint("teacher", stub)
    judge = make_endpoint("judge", stub)
    judge.base_url = "http://127.0.0.1:9/v1"  # nothing listens: every leaf call fails
    judge.save()
    trajectory = Trajectory.objects.create(paper=toy_paper, title="run 1", source="distilled", end_state="submitted")
    folder = settings.DATA_DIR / "submissions" / "unjudged-run-1"
    folder.mkdir(parents=True)
    (folder / "solution.py").write_text(GOOD)
    record = {"paper": "toy-add", "index": 0, "trajectory": trajectory.pk, "submission": "submissions/unjudged-run-1",
              "error": "", "end_state": "submitted", "steps": 3, "flagged": False, "teacher_cost_usd": 0.1}
    config = validate_config("distill", {
        "papers": "toy-add", "teacher": "teacher", "judge": "judge", "runs_per_paper": 1, "threshold": 0.5,
        "dataset": "unjudged", "sandbox_backend": "bwrap", "judge_help_after_s": 0})
    job = Job.objects.create(kind="distill", config=config, queue="cpu", created_by=personas["operator"],
                             checkpoint={"step": 1, "runs": [record]})
    run_job(job.pk)
    job.refresh_from_db()
    # It said "Succeeded" with 0 of 1 runs judged and an empty dataset.
    assert job.state == "failed" and "none of the 1 runs could be judged; toy-add run 1: judge job" in job.error
    assert not Dataset.objects.exists()

    judge.base_url = stub.base_url  # the endpoint is back: Retry judges the run again
    judge.save()
    Job.objects.filter(pk=job.pk).update(state=Job.State.QUEUED)
    run_job(job.pk)
    job.refresh_from_db()
    assert job.state == "succeeded", job.error
    assert job.result["judged"] == 1 and Job.objects.filter(kind="judge", state="succeeded").count() == 1
