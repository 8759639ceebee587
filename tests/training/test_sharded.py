"""The sharded RL trainer: torchrun ranks (gloo on these CPUs; NCCL on GPUs, same code) train the
same loss as the 1-rank LocalTrainer, fail with the reason when a rank dies, and resume from a
sharded checkpoint on another rank count."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
import torch
from transformers import AutoTokenizer

from apps.jobs.heartbeats import heartbeats_key, redis_client
from apps.jobs.models import Job
from apps.jobs.services.control import retry_job
from apps.jobs.services.launching import launch_job
from tests.jobs.test_jobs import wait_for
from tests.support.subtrajectories import random_batch
from worker.engines.ranks import node_folder, start_other_nodes, stop_other_nodes
from worker.engines.ranks import run as ranks_engine
from worker.heartbeat import beat
from worker.training.rl import RLSettings, Stage, SubTrajectory
from worker.training.rl_update import LocalTrainer
from worker.training.sharded import (
    NODES_FILE,
    SHARDED_DIR,
    ShardedTrainer,
    Sharding,
    ShardingError,
    check_strategy,
    deepspeed_installed,
    failure_reason,
    job_sharding,
    run_node,
    torchrun_command,
    write_nodes_file,
)
from worker.training.sharded_rank import part_bounds
from worker.training.tiny import build_tiny_model

# Adam's first steps move every parameter by about the learning rate whatever the gradient's
# size, so float noise in a near-zero gradient shows up at that scale: 1e-3 keeps it under 1e-5.
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("sharded-policy"))


@pytest.fixture(scope="module")
def untied_policy(tmp_path_factory) -> Path:
    """An LM head of its own (as 7B and larger): FSDP2 scores it in slices, body and head apart."""
    return build_tiny_model(tmp_path_factory.mktemp("sharded-untied-policy"), tied=False)


def batch(seed: int) -> list[SubTrajectory]:
    return random_batch(seed, rows=7)


def settings_for(policy: Path, out: Path, **overrides) -> RLSettings:
    # minibatches of 3 over 7 rows: parts of 2+1 and, in the last minibatch of 1, an empty part
    # fp32 compute: bf16 autocast would round differently on parts of different shapes
    options = {"stages": (Stage(60.0, 1),), "learning_rate": 1e-3, "minibatch_size": 3, "seed": 0, "precision": "fp32"}
    return RLSettings(policy=str(policy), output_dir=out, **{**options, **overrides})


def max_diff(a, b) -> float:
    theirs = b.state_dict()
    return max(float((value - theirs[name]).abs().max()) for name, value in a.state_dict().items())


def test_ddp_over_two_nodes_at_a_rendezvous_equals_one_rank_with_kl_and_two_passes(policy, tmp_path):
    """Two "nodes" of one rank each, as two GPU workers run them: node 0 beside the job's process,
    node 1 started by its own worker (``run_node``, what a ``ranks`` job runs) from the description
    node 0 leaves in the shared folder, meeting at node 0's c10d rendezvous."""
    settings = settings_for(policy, tmp_path, kl_coef=0.1, ppo_epochs=2)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    local = LocalTrainer(settings, tokenizer)
    local.start_stage(policy, with_optimizer=False)
    expected = [local.update(batch(k)) for k in range(2)]
    node_0 = job_sharding({"strategy": "ddp", "nodes": 2}, processes=1, rdzv_id="test")
    assert node_0.rdzv_endpoint.endswith(tuple(f":{p}" for p in range(1024, 65536))) and node_0.node_rank == 0
    node_0 = replace(node_0, rdzv_endpoint=f"127.0.0.1:{node_0.rdzv_endpoint.rsplit(':', 1)[1]}")
    node_1: dict = {}
    with ShardedTrainer(settings, tokenizer, node_0) as sharded:
        write_nodes_file(sharded.folder, sharded.rank_module, node_0)
        worker = threading.Thread(target=lambda: node_1.update(run_node(sharded.folder, 1, lambda: False, poll_s=0.05)))
        worker.start()
        sharded.start_stage(policy, with_optimizer=False)
        got = [sharded.update(batch(k)) for k in range(2)]
        assert [(r["rank"], r["local_rank"]) for r in sharded.ranks()] == [(0, 0), (1, 0)]
    worker.join(timeout=30)
    assert node_1["node_rank"] == 1, "node 1's ranks left cleanly with the run"
    assert max_diff(local.model, sharded.model) < TOLERANCE
    for mine, theirs in zip(got, expected, strict=True):
        assert mine.tokens == theirs.tokens
        assert mine.loss == pytest.approx(theirs.loss, abs=1e-5) and mine.kl == pytest.approx(theirs.kl, abs=1e-6)
    assert sharded.process.poll() == 0, "the ranks leave cleanly when asked"


@pytest.mark.django_db
def test_node_0_queues_a_job_per_other_node_on_its_gpu_queue_and_stops_them_with_the_run(personas, settings):
    job = Job.objects.create(kind="rl", title="big rl", queue="gpu-8", gpus=8, created_by=personas["operator"],
                             config={"nodes": 3, "gpus": 8, "strategy": "fsdp"})
    layout = Sharding("fsdp", procs_per_node=8, nodes=3, rdzv_endpoint="node-a:29400", rdzv_id=f"job-{job.pk}")
    (Path(settings.DATA_DIR) / "checkpoints" / f"job-{job.pk}" / "ranks").mkdir(parents=True)
    nodes = start_other_nodes(job, layout, "worker.training.sharded_rank")
    assert [(n.kind, n.queue, n.gpus, n.parent_id, n.config["node_rank"]) for n in nodes] == [
        ("ranks", "gpu-8", 8, job.pk, 1), ("ranks", "gpu-8", 8, job.pk, 2)]
    described = json.loads((node_folder(job) / NODES_FILE).read_text())
    assert described["module"] == "worker.training.sharded_rank" and described["sharding"]["nodes"] == 3
    stop_other_nodes(nodes)
    assert {n.state for n in Job.objects.filter(parent=job)} == {Job.State.CANCELLED}
    stray = Job.objects.create(kind="ranks", config={"node_rank": 1})
    with pytest.raises(ShardingError, match="belongs to an SFT or RL job over several nodes"):
        ranks_engine(stray, None)


def test_fsdp_on_two_ranks_equals_one_rank_and_its_checkpoint_resumes_on_one_rank(untied_policy, tmp_path):
    """FSDP2 with the log-probs in slices (body and head called apart, each a unit of its own);
    the tied model of the other tests takes the root forward."""
    policy = untied_policy
    settings = settings_for(policy, tmp_path / "run")
    tokenizer = AutoTokenizer.from_pretrained(policy)
    local = LocalTrainer(settings, tokenizer)
    local.start_stage(policy, with_optimizer=False)
    for k in range(2):
        local.update(batch(k))
    stage = tmp_path / "stage-1"
    with ShardedTrainer(settings, tokenizer, Sharding("fsdp", procs_per_node=2)) as sharded:
        sharded.start_stage(policy, with_optimizer=False)
        for k in range(2):
            sharded.update(batch(k))
        sharded.save(stage)
    assert max_diff(local.model, sharded.model) < TOLERANCE
    # one file per rank, and a plain Hugging Face folder for serving
    assert len(list((stage / SHARDED_DIR).glob("*.distcp"))) == 2
    assert (stage / "model.safetensors").is_file() and (stage / "tokenizer_config.json").is_file()

    # The retry: one rank, from the 2-rank sharded checkpoint (model and AdamW state resharded),
    # steps on exactly as the 1-rank run that never stopped.
    local.save(tmp_path / "local-stage-1")
    local.start_stage(tmp_path / "local-stage-1", with_optimizer=True)
    local.update(batch(2))
    with ShardedTrainer(settings, tokenizer, Sharding("fsdp", procs_per_node=1)) as resumed:
        resumed.start_stage(stage, with_optimizer=True)
        resumed.update(batch(2))
        assert max_diff(local.model, resumed.model) < TOLERANCE
        # a rank that raises fails the call with its exception, not a bare exit status
        with pytest.raises(ShardingError, match=r"rank 0 failed \(exit code 1: .*PolicyLoadError: .*nowhere is neither a model folder"):
            resumed.start_stage(tmp_path / "nowhere", with_optimizer=False)


def sharded_ranks(rank: int) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if "worker.training.sharded_rank" in " ".join(process.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error):
                if process.environ().get("RANK") == str(rank):
                    found.append(process)
    return found


@pytest.mark.django_db(transaction=True)
def test_a_sharded_rl_job_lists_its_ranks_fails_with_the_reason_when_one_dies_and_retries_on_one_rank(
        policy, personas, celery_worker, settings):
    settings.KLONG_SFT_CPU_PROCESSES = 2  # CPU ranks per worker here; GPUs per node on GPU workers
    config = {"task_source": "toy", "toy_tasks": 1, "n_rollouts": 2, "stages": "20m:1, 40m:1", "l_max": 160,
              "learning_rate": 1e-2, "minibatch_size": 16, "policy_model": str(policy), "strategy": "fsdp",
              "kl_coef": 0.05}  # the reference: a whole frozen copy on every rank
    job = launch_job("rl", config, personas["operator"])
    # the ranks are up (the job lists them) and the first update has not run yet
    wait_for(lambda: job.logs.filter(text__contains="The update trains on 2 ranks").exists(), timeout=60)
    [victim] = sharded_ranks(1)
    victim.kill()
    job = wait_for(lambda: Job.objects.filter(pk=job.pk, state__in=Job.FINISHED).first(), timeout=60)
    assert job.state == Job.State.FAILED and "rank 1 failed (killed by SIGKILL)" in job.error, job.error
    logs = " ".join(job.logs.values_list("text", flat=True))
    assert "The update trains on 2 ranks (fsdp): rank 0 on" in logs and "rank 1 on" in logs
    assert not sharded_ranks(0), "the job's failure ends every rank"

    settings.KLONG_SFT_CPU_PROCESSES = 1
    retry_job(job, personas["operator"])
    job = wait_for(lambda: Job.objects.filter(pk=job.pk, state__in=Job.FINISHED).first(), timeout=90)
    assert job.state == Job.State.SUCCEEDED, job.error
    logs = " ".join(job.logs.values_list("text", flat=True))
    assert "The update trains on 1 ranks (fsdp)" in logs
    assert [(r["rank"], r["device"]) for r in job.result["ranks"]] == [(0, "cpu")]
    assert job.checkpoint["stage"] == 2 and job.result["iterations"] == 2
    # each stage checkpoint: a plain Hugging Face folder for serving, and the sharded state beside it
    stage = Path(job.checkpoint["path"])
    assert (stage / "model.safetensors").is_file() and (stage / SHARDED_DIR / ".metadata").is_file()


def test_each_rank_trains_a_contiguous_part_of_every_minibatch():
    assert [part_bounds(7, r, 2) for r in range(2)] == [(0, 4), (4, 7)]
    assert [part_bounds(1, r, 2) for r in range(2)] == [(0, 1), (1, 1)]  # rank 1 gets a no-loss row
    assert [part_bounds(5, r, 3) for r in range(3)] == [(0, 2), (2, 4), (4, 5)]


def test_options_a_worker_cannot_run_are_refused_with_the_reason(tmp_path):
    with pytest.raises(ShardingError, match="Unknown strategy 'zero2'"):
        Sharding("zero2")
    with pytest.raises(ShardingError, match="CPU offload shards the model: choose fsdp"):
        Sharding("ddp", offload=True)
    with pytest.raises(ShardingError, match="rendezvous endpoint"):
        Sharding("fsdp", nodes=2)
    if not deepspeed_installed():
        with pytest.raises(ShardingError, match="zero3 needs DeepSpeed, which is not installed"):
            check_strategy("zero3", rl=False)
    with pytest.raises(ShardingError, match="zero3"):
        check_strategy("zero3", rl=True)
    if not torch.cuda.is_available():  # refused before any rank starts
        with pytest.raises(ShardingError, match="this worker has no GPU"):
            ShardedTrainer(settings_for(Path("unused"), tmp_path), None, Sharding("fsdp", offload=True))


def test_several_nodes_meet_at_a_rendezvous_and_one_node_runs_standalone(tmp_path):
    one = torchrun_command(Sharding("fsdp", procs_per_node=8), "m", tmp_path)
    assert "--standalone" in one and "--nproc_per_node=8" in one
    two = torchrun_command(Sharding("fsdp", procs_per_node=8, nodes=2, node_rank=1, rdzv_endpoint="node0:29400",
                                    rdzv_id="job-7"), "m", tmp_path)
    assert {"--nnodes=2", "--node_rank=1", "--rdzv_backend=c10d", "--rdzv_endpoint=node0:29400",
            "--rdzv_id=job-7"} <= set(two) and "--standalone" not in two


@pytest.mark.django_db
def test_the_api_refuses_what_the_fleet_cannot_train_with_the_reason_and_takes_the_rest(client_for, policy):
    client = client_for("operator")
    sft = {"ids": "1", "base_model": str(policy), "l_max": 300}
    rl = {"task_source": "toy", "policy_model": str(policy), "stages": "20m:1"}

    def errors(kind: str, config: dict) -> dict:
        response = client.post("/api/jobs/", {"kind": kind, "config": config}, content_type="application/json")
        assert response.status_code == 400, response.content
        return response.json()["config"]

    assert "choose fsdp or zero3, not ddp" in errors("sft", {**sft, "gpus": 8, "offload": True})["offload"][0]
    assert "ask for GPUs" in errors("rl", {**rl, "strategy": "fsdp", "offload": True})["offload"][0]
    assert "zero3 is for SFT" in errors("rl", {**rl, "gpus": 8, "strategy": "zero3"})["strategy"][0]
    assert "runs on GPU workers" in errors("sft", {**sft, "gpus": 0, "strategy": "fsdp"})["strategy"][0]
    assert "over a GPU count it divides" in errors("sft", {**sft, "gpus": 4, "strategy": "fsdp",
                                                           "sequence_parallel": 3})["sequence_parallel"][0]
    assert "Select a valid choice" in errors("sft", {**sft, "strategy": "zero2"})["strategy"][0]
    assert "ask for GPUs per node" in errors("rl", {**rl, "gpus": 0, "nodes": 2})["nodes"][0]
    redis_client().delete(heartbeats_key())
    try:
        assert "none of the 0 live worker machine(s) on queue gpu-8" in errors(
            "sft", {**sft, "gpus": 8, "strategy": "zero3"})["strategy"][0]
        beat({"name": "gpu8@node-a", "node": "node-a", "queues": ["gpu", "gpu-8"], "deepspeed": True,
              "seen_at": time.time()})
        zero3 = client.post("/api/jobs/", {"kind": "sft", "config": {**sft, "gpus": 8, "strategy": "zero3"}},
                            content_type="application/json")
        assert zero3.status_code == 202 and zero3.json()["queue"] == "gpu-8"
        two_nodes = {**rl, "gpus": 8, "nodes": 2, "strategy": "fsdp"}
        assert "asks for 2 nodes of 8 GPUs; 1 machine(s) of the fleet have a live worker on queue gpu-8" in errors(
            "rl", two_nodes)["nodes"][0]
        beat({"name": "gpu8@node-b", "node": "node-b", "queues": ["gpu-8"], "seen_at": time.time()})
        accepted = client.post("/api/jobs/", {"kind": "rl", "config": two_nodes}, content_type="application/json")
        assert accepted.status_code == 202 and accepted.json()["queue"] == "gpu-8"
    finally:
        redis_client().delete(heartbeats_key())
    fsdp = client.post("/api/jobs/", {"kind": "rl", "config": {**rl, "gpus": 4, "strategy": "fsdp", "offload": True}},
                       content_type="application/json")
    assert fsdp.status_code == 202, fsdp.content
    config = Job.objects.get(pk=fsdp.json()["id"]).config
    assert (config["strategy"], config["offload"], config["nodes"]) == ("fsdp", True, 1)
    page = client.get("/jobs/new/?kind=sft").content.decode()
    assert page.index('name="config-gpus"') < page.index('name="config-nodes"') < page.index('name="config-strategy"')


TORCHRUN_SUMMARY = """
============================================================
worker.training.sharded_rank FAILED
------------------------------------------------------------
Failures:
[1]:
  time      : 2026-12-05_17:17:11
  host      : node-b
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 10646)  (SIGKILL)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 10646
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-05_17:17:11
  host      : node-a
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 10645)
  error_file: /tmp/torchelastic/error.json
  traceback : Traceback (most recent call last):
    File "worker/training/sharded_rank.py", line 212, in main
      dist.broadcast_object_list(command, src=0)
  RuntimeError: Connection closed by peer [127.0.0.1]:35013.
============================================================
"""


def test_a_rank_killed_by_a_signal_is_the_reason_even_when_a_peer_failed_first(tmp_path):
    """The killed rank's peers fail in their next collective, sometimes a moment before torchrun
    notices the signal: the signal is still the cause to report."""
    log = tmp_path / "torchrun.log"
    log.write_text(TORCHRUN_SUMMARY)
    assert failure_reason(log, 1).startswith(f"rank 1 failed (killed by SIGKILL); every rank's output: {log}")
    log.write_text(TORCHRUN_SUMMARY.replace("-9 (pid: 10646)  (SIGKILL)", "1 (pid: 10646)"))
    assert failure_reason(log, 1).startswith("rank 0 failed (exit code 1: RuntimeError: Connection closed by peer")
