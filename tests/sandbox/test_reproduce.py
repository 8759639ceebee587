"""The reproduction step and GPU requests, on the real backends (bubblewrap; podman's Docker API)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from tests.sandbox.conftest import BACKENDS
from worker.sandbox import SandboxError, SandboxSpec, open_sandbox
from worker.sandbox.reproduce import reproduce

WRITES_RESULTS = """#!/bin/bash
echo "training on $(nproc) cores"
python3 -c "print('model,accuracy'); print('small,0.93')" > results.csv
mkdir -p out && head -c 2000000 /dev/zero > out/checkpoint.bin
echo "network: $(cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | tr '\\n' ' ')"
echo done
"""


def submission(root: Path, script: str) -> Path:
    root.mkdir(parents=True)
    (root / "reproduce.sh").write_text(script)
    (root / "train.py").write_text("print('hi')\n")
    (root / "old.csv").write_text("stale,1\n")  # an output the agent wrote during its run
    past = time.time() - 3600
    for f in root.iterdir():
        os.utime(f, (past, past))
    root.chmod(0o755)
    return root


@pytest.mark.parametrize("backend", BACKENDS)
def test_reproduce_sh_runs_in_a_fresh_sandbox_and_its_outputs_come_back(backend, make_spec, tmp_path):
    sub = submission(tmp_path / "sub", WRITES_RESULTS)
    done = reproduce(sub, tmp_path / "reproduced", make_spec(backend), timeout_s=60, max_file_mb=1)
    folder = Path(done.folder)
    assert (done.exit_code, done.timed_out, done.script_found, done.backend) == (0, False, True, backend)
    assert (folder / "results.csv").read_text() == "model,accuracy\nsmall,0.93\n"
    log = (folder / "reproduce.log").read_text()
    assert log.startswith("training on") and "network: lo \n" in log  # confined: no network but loopback
    assert "done\n" in log and "[klong reproduction] reproduce.sh exited with code 0" in log.splitlines()[-1]
    # written by the run: newer than its start; the agent's own files keep their times
    assert (folder / "results.csv").stat().st_mtime >= done.started_at > (folder / "old.csv").stat().st_mtime
    assert (folder / "out").is_dir() and not (folder / "out" / "checkpoint.bin").exists()  # over max_file_mb
    assert (sub / "results.csv").exists() is False  # the agent's folder is never written to


def test_a_reproduction_past_its_timeout_is_killed_and_the_log_says_so(make_spec, tmp_path):
    sub = submission(tmp_path / "sub", "echo started\necho partial > partial.txt\nsleep 60\necho never\n")
    started = time.monotonic()
    done = reproduce(sub, tmp_path / "reproduced", make_spec("bwrap"), timeout_s=2)
    assert time.monotonic() - started < 30
    assert done.timed_out and done.exit_code is None
    log = (Path(done.folder) / "reproduce.log").read_text()
    assert log.startswith("started\n") and "never" not in log
    assert "reproduce.sh was killed after 2 s: it ran past the reproduction timeout" in log
    assert (Path(done.folder) / "partial.txt").read_text() == "partial\n"  # the state it reached is kept


def test_a_submission_without_reproduce_sh_is_copied_back_and_says_so(make_spec, tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "README.md").write_text("no script\n")
    done = reproduce(sub, tmp_path / "reproduced", make_spec("bwrap"), timeout_s=10)
    assert not done.script_found and done.exit_code is None
    assert "no reproduce.sh in the submission" in (Path(done.folder) / "reproduce.log").read_text()


def test_gpu_requests_fail_with_a_clear_reason_where_none_can_be_given(make_spec):
    with pytest.raises(SandboxError, match="bubblewrap cannot give a sandbox GPUs"):
        open_sandbox(make_spec("bwrap", gpus=1), slots=None)
    # podman's Docker API starts the container but ignores device requests; no GPU here either
    with pytest.raises(SandboxError, match=r"asked for 1 GPU\(s\) but its container sees 0"):
        open_sandbox(make_spec("docker", gpus=1), slots=None)
    with pytest.raises(SandboxError, match="asked for GPU devices nvidia.com/gpu=all"):
        open_sandbox(make_spec("docker", gpu_devices=("nvidia.com/gpu=all",)), slots=None)


def test_gpu_specs_are_checked_and_become_device_requests():
    from worker.sandbox.docker_backend import container_kwargs

    with pytest.raises(ValueError, match="not a CDI device name"):
        SandboxSpec(gpu_devices=("gpu0",))
    with pytest.raises(ValueError, match="not both"):
        SandboxSpec(gpus=1, gpu_devices=("nvidia.com/gpu=0",))
    [request] = container_kwargs(SandboxSpec(gpu_devices=("nvidia.com/gpu=0", "nvidia.com/gpu=1")), "img")["device_requests"]
    assert (request.driver, request.device_ids) == ("cdi", ["nvidia.com/gpu=0", "nvidia.com/gpu=1"])


@pytest.mark.django_db
def test_a_judge_job_with_reproduce_grades_the_state_reproduce_sh_left(stub, personas, settings):
    import json

    from apps.judging.models import JudgeRun
    from apps.judging.services import request_judge_run
    from apps.rubrics.paperbench import flatten
    from tests.judging.helpers import make_endpoint, make_paper_with_rubric
    from tests.judging.test_judge_runs import run_job_inline

    paper, version = make_paper_with_rubric("repro-paper")
    submission(Path(settings.DATA_DIR) / "submissions" / "repro-sub", WRITES_RESULTS)
    job = request_judge_run(paper=paper, endpoint=make_endpoint(stub.base_url), submission="submissions/repro-sub",
                            user=personas["operator"], reproduce={"reproduce_timeout": 60, "reproduce_backend": "bwrap"})
    assert job.config["reproduce"] and job.config["reproduce_network"] is False  # no network unless asked
    result = run_job_inline(job)
    assert result["reproduction"]["exit_code"] == 0 and not result["reproduction"]["timed_out"]
    run = JudgeRun.objects.get(pk=result["judge_run"])
    assert run.submission == f"submissions/repro-sub-reproduced-job{job.pk}"
    nodes = flatten(version.tree)
    prompts = {nodes[g.node_index].requirements: json.dumps(g.prompt) for g in run.grades.all()}
    analysis = prompts["The accuracy table shows above 90% accuracy"]  # a Result Analysis leaf
    assert "small,0.93" in analysis  # written by the reproduction: shown
    assert "stale,1" not in analysis  # the agent's own old output: not a result of this run
    execution = prompts["The training script runs to completion"]  # Code Execution: sees the log
    assert "training on" in execution and "exited with code 0" in execution


@pytest.mark.django_db
def test_judge_reproduce_options_are_validated(client_for, stub):
    from tests.judging.helpers import make_endpoint, make_paper_with_rubric, stored_submission

    paper, _ = make_paper_with_rubric("repro-form")
    make_endpoint(stub.base_url)
    config = {"paper": paper.pk, "endpoint": "stub", "submission": stored_submission(), "reproduce": True}
    response = client_for("operator").post("/api/jobs/", {"kind": "judge", "config": {
        **config, "reproduce_backend": "bwrap", "reproduce_gpus": 1, "reproduce_started_at": 5.0}},
        content_type="application/json")
    assert response.status_code == 400
    errors = response.json()["config"]
    assert "bubblewrap cannot give a sandbox GPUs" in errors["reproduce_gpus"][0]
    assert "sets it" in errors["reproduce_started_at"][0]


@pytest.mark.django_db(transaction=True)
def test_rl_judging_reproduces_each_submission_before_grading_it(stub, personas, settings, client_for):
    from apps.jobs.models import Job
    from tests.judging.helpers import make_endpoint, make_paper_with_rubric
    from worker.engines.rl import reproduce_options
    from worker.training.rl import Task
    from worker.training.rl_agent import PaperTask, QueueJudge

    paper, version = make_paper_with_rubric("repro-rl")
    make_endpoint(stub.base_url)
    submission(Path(settings.DATA_DIR) / "submissions" / "rl-state", WRITES_RESULTS)
    options = reproduce_options({"reproduce": True, "reproduce_timeout": 60, "sandbox_backend": "bwrap"})
    judge = QueueJudge("stub", user=personas["operator"], help_after_s=0.0, poll_s=0.05, reproduce=options)
    [score] = judge.score([(Task(paper.slug, PaperTask(paper.pk, paper.slug, "", rubric_version=version.pk)),
                            "submissions/rl-state")])
    job = Job.objects.get(pk=judge.jobs[0])
    assert job.config["reproduce_timeout"] == 60 and job.result["reproduction"]["exit_code"] == 0
    assert score == job.result["score"]
    # the form: reproduction is for papers (the toy has no reproduce.sh)
    response = client_for("operator").post("/api/jobs/", {"kind": "rl", "config": {
        "task_source": "toy", "policy_model": "/nonexistent", "reproduce": True}}, content_type="application/json")
    assert "reproduction is for papers" in response.json()["config"]["reproduce"][0]


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_judge_job_kills_its_reproduction(stub, personas, settings):
    from apps.jobs.models import Job
    from apps.jobs.progress import JobCancelled
    from apps.judging.services import request_judge_run
    from tests.judging.helpers import make_endpoint, make_paper_with_rubric
    from tests.judging.test_judge_runs import run_job_inline

    paper, _ = make_paper_with_rubric("repro-cancel")
    submission(Path(settings.DATA_DIR) / "submissions" / "slow", "echo started\nsleep 120\n")
    job = request_judge_run(paper=paper, endpoint=make_endpoint(stub.base_url), submission="submissions/slow",
                            user=personas["operator"], reproduce={"reproduce_timeout": 300, "reproduce_backend": "bwrap"})
    def cancel() -> None:  # the cancel button, from another thread (its own connection, closed)
        from django.db import connection

        Job.objects.filter(pk=job.pk).update(state=Job.State.CANCELLING)
        connection.close()

    timer = threading.Timer(1.5, cancel)
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(JobCancelled):
            run_job_inline(job)
    finally:
        timer.join()
    assert time.monotonic() - started < 20  # not the script's 120 s, nor the 300 s timeout
