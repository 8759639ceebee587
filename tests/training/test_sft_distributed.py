"""Multi-process SFT: torchrun ranks (gloo on these CPUs; NCCL on GPUs, same code) train data-parallel."""

from __future__ import annotations

import psutil
import pytest

from apps.jobs.models import Job, ModelCheckpoint
from apps.jobs.services.launching import launch_job
from apps.trajectories.chat_native import renderer_for
from apps.trajectories.splitting import SplitConfig
from apps.trajectories.windows import split_examples
from tests.jobs.test_jobs import wait_for
from tests.training.test_sft import Recorder, agent_run, make_trajectory, tiny_model, tokenizer  # noqa: F401
from worker.engines.sft import training_processes
from worker.training.sft import SFTSettings, train_distributed


def ranks_alive() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if "worker.training.sft_dist" in " ".join(p.info["cmdline"] or [])]


def test_two_ranks_share_the_data_stop_together_and_resume(tiny_model, tokenizer, tmp_path):  # noqa: F811
    _, examples = split_examples(agent_run(10), SplitConfig(l_max=300, prefix_end=1), renderer_for(tokenizer))
    examples = list(examples)
    settings = SFTSettings(base_model=str(tiny_model), output_dir=tmp_path, max_length=300, max_steps=6,
                           save_steps=1000, learning_rate=1e-3)
    first = Recorder(stop_at=2)
    stopped = train_distributed(examples, settings, first, processes=2, poll_s=0.05)
    assert stopped["world_size"] == 2
    # Two ranks with a batch of one each: an epoch of N windows takes ceil(N / 2) steps, not N.
    assert first.metrics[0][1]["epoch"] == pytest.approx(1 / -(-len(examples) // 2))
    # The stop was agreed on: every rank saved at the same step, before the end, and none is left.
    assert 2 <= stopped["steps"] < 6 and first.saves[-1] == stopped["steps"]
    assert not ranks_alive()
    second = Recorder()
    finished = train_distributed(examples, settings, second, processes=2, poll_s=0.05)
    assert finished["resumed_from"] == f"checkpoint-{stopped['steps']}" and finished["steps"] == 6
    assert [step for step, _ in second.metrics] == list(range(stopped["steps"] + 1, 7))
    assert (tmp_path / "final" / "config.json").is_file()


def test_a_job_asking_for_more_gpus_than_the_worker_has_is_refused_with_the_numbers():
    with pytest.raises(ValueError, match="asks for 4 GPUs; this worker has 2"):
        training_processes(4, visible=2, cpu_processes=1)
    assert training_processes(4, visible=8, cpu_processes=1) == 4
    assert training_processes(1, visible=0, cpu_processes=3) == 3  # a CPU-only worker's own setting
    assert training_processes(1, visible=1, cpu_processes=3) == 1


@pytest.mark.django_db(transaction=True)
def test_an_sft_job_trains_through_torchrun_and_records_the_checkpoint(tiny_model, personas, celery_worker,  # noqa: F811
                                                                       settings):
    settings.KLONG_SFT_CPU_PROCESSES = 2
    trajectory = make_trajectory(12)
    job = launch_job("sft", {"ids": str(trajectory.pk), "base_model": str(tiny_model), "l_max": 300, "max_steps": 4,
                             "grad_accum": 1, "precision": "fp32", "gpus": 0}, personas["operator"])
    assert job.gpus == 0
    job = wait_for(lambda: Job.objects.filter(pk=job.pk, state__in=Job.FINISHED).first(), timeout=120)
    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.result["world_size"] == 2 and job.result["steps"] == 4
    assert list(job.metrics.filter(name="loss").values_list("step", flat=True)) == [1, 2, 3, 4]
    assert ModelCheckpoint.objects.get(job=job).trajectory_ids == [trajectory.pk]
    logs = " ".join(job.logs.values_list("text", flat=True))
    assert "torchrun" in logs and "Trained on 2 ranks (ddp): rank 0 on" in logs and "rank 1 on" in logs
    assert [r["rank"] for r in job.result["ranks"]] == [0, 1]


@pytest.mark.django_db
def test_an_sft_job_goes_to_the_cpu_queue_with_no_gpus_and_to_the_queue_of_its_gpu_count(tiny_model, personas):  # noqa: F811
    config = {"ids": "1", "base_model": str(tiny_model), "l_max": 300}
    on_cpu = launch_job("sft", {**config, "gpus": 0}, personas["operator"])
    on_one = launch_job("sft", {**config, "gpus": 1}, personas["operator"])
    on_four = launch_job("sft", {**config, "gpus": 4}, personas["operator"])
    assert (on_cpu.queue, on_cpu.gpus) == ("cpu", 0) and (on_one.queue, on_one.gpus) == ("gpu", 1)
    assert (on_four.queue, on_four.gpus) == ("gpu-4", 4)
