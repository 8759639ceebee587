from __future__ import annotations

from pathlib import Path

import pytest

from apps.jobs.models import Job, ModelCheckpoint
from apps.jobs.services.control import retry_job
from apps.jobs.services.launching import launch_job
from apps.trajectories.chat_native import renderer_for
from apps.trajectories.models import Trajectory, Turn
from apps.trajectories.splitting import IGNORE_INDEX, SplitConfig
from apps.trajectories.windows import TurnRow, split_examples
from tests.jobs.test_jobs import wait_for
from tests.support.streaming import streamed
from worker.training.sft import Reporter, SFTSettings, build_trainer, train_sft
from worker.training.tiny import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def agent_run(n_steps: int) -> list[TurnRow]:
    rows = [TurnRow("system", "You reproduce papers."), TurnRow("user", "Reproduce the paper at /home/paper.")]
    for i in range(n_steps):
        rows.append(TurnRow("assistant", f"python train.py --epochs {i % 5} && python eval.py"))
        rows.append(TurnRow("tool", f"epoch {i} loss {1.0 / (i + 1):.3f} accuracy 0.{i % 10}" * 3))
    return rows


def test_labels_are_exactly_the_windows_assistant_turns(tokenizer):
    rows = agent_run(30)
    config = SplitConfig(l_max=400, prefix_end=1, overlap_turns=2, history_budget=80)
    manifest, examples = split_examples(rows, config, renderer_for(tokenizer))
    examples = list(examples)
    assert len(examples) > 2
    for example in examples:
        window = manifest.window(example.window)
        trained = tokenizer.decode([t for t in example.labels if t != IGNORE_INDEX])
        # Content and end-of-turn of each loss turn, in order; never a header, an observation or a marker.
        expected = "".join(rows[i].text + "<|im_end|>\n" for i in window.loss_turns)
        assert trained == expected
        assert len(example.input_ids) <= config.l_max


def test_no_loss_turns_carry_no_labels(tokenizer):
    rows = agent_run(6)
    rows[4] = TurnRow("assistant", rows[4].text, no_loss=True)
    manifest, examples = split_examples(rows, SplitConfig(l_max=4096, prefix_end=1), renderer_for(tokenizer))
    trained = "".join(tokenizer.decode([t for t in e.labels if t != IGNORE_INDEX]) for e in examples)
    assert trained.count("<|im_end|>") == 5


class Recorder(Reporter):
    def __init__(self, stop_at: int | None = None) -> None:
        self.metrics: list[tuple[int, dict]] = []
        self.saves: list[int] = []
        self.stop_at = stop_at
        self.step = 0

    def metric(self, step: int, **values: float) -> None:
        self.metrics.append((step, values))

    def progress(self, step: int, total: int) -> None:
        self.step = step

    def saved(self, step: int, path: Path) -> None:
        self.saves.append(step)

    def should_stop(self) -> bool:
        return self.stop_at is not None and self.step >= self.stop_at


def test_the_trainer_feeds_our_labels_unchanged(tiny_model, tokenizer, tmp_path):
    _, examples = split_examples(agent_run(8), SplitConfig(l_max=200, prefix_end=1), renderer_for(tokenizer))
    examples = list(examples)
    settings = SFTSettings(base_model=str(tiny_model), output_dir=tmp_path, max_length=200, batch_size=1)
    trainer = build_trainer(examples, settings, Recorder())
    batches = list(trainer.get_train_dataloader())
    fed = sorted(tuple(b["labels"][0].tolist()) for b in batches)
    assert fed == sorted(tuple(e.labels) for e in examples)


def test_the_loss_falls_over_a_short_run(tiny_model, tokenizer, tmp_path):
    _, examples = split_examples(agent_run(10), SplitConfig(l_max=300, prefix_end=1), renderer_for(tokenizer))
    settings = SFTSettings(base_model=str(tiny_model), output_dir=tmp_path, max_length=300, learning_rate=3e-3,
                           max_steps=30, batch_size=2, save_steps=1000)
    recorder = Recorder()
    metrics = train_sft(list(examples), settings, recorder)
    losses = [values["loss"] for _step, values in recorder.metrics]
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    assert (tmp_path / "final" / "config.json").is_file() and metrics["steps"] == 30
    assert list((tmp_path / "dataset").iterdir()) == []  # the examples' copy on disk is removed once trained
    assert all(values["tokens_per_s"] > 0 for _step, values in recorder.metrics)


def test_a_run_resumes_from_its_last_checkpoint(tiny_model, tokenizer, tmp_path):
    _, examples = split_examples(agent_run(10), SplitConfig(l_max=300, prefix_end=1), renderer_for(tokenizer))
    examples = list(examples)
    settings = SFTSettings(base_model=str(tiny_model), output_dir=tmp_path, max_length=300, max_steps=8, save_steps=3)
    first = Recorder(stop_at=4)
    train_sft(examples, settings, first)
    assert first.saves[-1] == 4  # stopping saves where it stopped
    second = Recorder()
    metrics = train_sft(examples, settings, second)
    assert metrics["resumed_from"] == "checkpoint-4" and metrics["steps"] == 8
    assert [step for step, _ in second.metrics] == [5, 6, 7, 8]


def make_trajectory(n_steps: int) -> Trajectory:
    trajectory = Trajectory.objects.create(title="sft data", review=Trajectory.Review.ACCEPTED)
    Turn.objects.bulk_create([
        Turn(trajectory=trajectory, index=i, role=row.role, text=row.text) for i, row in enumerate(agent_run(n_steps))
    ])
    return trajectory


@pytest.mark.django_db(transaction=True)
def test_an_sft_job_trains_and_records_its_lineage(tiny_model, personas, celery_worker):
    trajectory = make_trajectory(12)
    job = launch_job("sft", {"ids": str(trajectory.pk), "base_model": str(tiny_model), "l_max": 300,
                             "max_steps": 6, "learning_rate": 1e-3, "grad_accum": 1, "precision": "fp32"},
                     personas["operator"])
    job = wait_for(lambda: Job.objects.filter(pk=job.pk, state__in=Job.FINISHED).first(), timeout=120)
    assert job.state == Job.State.SUCCEEDED, job.error
    checkpoint = ModelCheckpoint.objects.get(job=job)
    assert checkpoint.trajectory_ids == [trajectory.pk] and len(checkpoint.manifest_hashes) == 1
    assert checkpoint.base_model == str(tiny_model) and len(checkpoint.dataset_hash) == 64
    assert job.metrics.filter(name="loss").count() == 6
    assert job.artifacts.get().kind == "checkpoint"
    assert job.result["precision"] == "fp32" and job.result["examples"] > 0 and job.result["loss_tokens"] > 0


@pytest.mark.django_db(transaction=True)
def test_a_cancelled_sft_job_keeps_its_checkpoint_and_a_retry_resumes(tiny_model, personas, celery_worker):
    from apps.jobs.services.control import cancel_job

    trajectory = make_trajectory(12)
    job = launch_job("sft", {"ids": str(trajectory.pk), "base_model": str(tiny_model), "l_max": 300,
                             "max_steps": 40, "save_steps": 1000, "grad_accum": 1, "precision": "fp32"},
                     personas["operator"])
    wait_for(lambda: Job.objects.filter(pk=job.pk, step__gte=3).exists(), timeout=120)
    cancel_job(job)
    job = wait_for(lambda: Job.objects.filter(pk=job.pk, state__in=Job.FINISHED).first(), timeout=60)
    assert job.state == Job.State.CANCELLED and job.checkpoint["step"] >= 3
    stopped_at = job.checkpoint["step"]
    retry_job(job, personas["operator"])
    job = wait_for(lambda: Job.objects.filter(pk=job.pk, state__in=Job.FINISHED).first(), timeout=180)
    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.result["resumed_from"] == f"checkpoint-{stopped_at}" and job.result["steps"] == 40
    steps = list(job.metrics.filter(name="loss").values_list("step", flat=True))
    assert steps == list(range(1, 41))  # nothing lost, nothing twice


@pytest.mark.django_db
def test_a_checkpoint_downloads_as_a_zip_of_its_folder(client_for, settings):
    import io
    import zipfile

    folder = settings.DATA_DIR / "checkpoints" / "job-1" / "final"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    checkpoint = ModelCheckpoint.objects.create(name="c", path="checkpoints/job-1/final", base_model="tiny")
    response = client_for("viewer").get(f"/jobs/checkpoints/{checkpoint.pk}/download/")
    assert response.status_code == 200
    assert response.is_async  # daphne sends it as it is read; a FileResponse it would read whole first
    names = zipfile.ZipFile(io.BytesIO(streamed(response))).namelist()
    assert names == ["config.json"]
    assert b"Download" in client_for("viewer").get("/jobs/checkpoints/").content


@pytest.mark.django_db
def test_a_checkpoint_path_outside_the_data_folder_is_never_served(client_for):
    checkpoint = ModelCheckpoint.objects.create(name="evil", path="../../etc", base_model="tiny")
    assert client_for("viewer").get(f"/jobs/checkpoints/{checkpoint.pk}/download/").status_code == 404


@pytest.mark.django_db
def test_the_sft_form_refuses_a_folder_that_is_not_a_model(client_for, tmp_path):
    response = client_for("operator").post(
        "/api/jobs/", {"kind": "sft", "config": {"base_model": str(tmp_path)}}, content_type="application/json"
    )
    assert response.status_code == 400
    assert "is not a model folder" in response.json()["config"]["base_model"][0]


@pytest.mark.django_db
def test_a_checkpoint_becomes_a_local_model_endpoint(client_for, settings):
    from apps.judging.models import ModelEndpoint

    (settings.DATA_DIR / "checkpoints" / "job-2" / "final").mkdir(parents=True)
    checkpoint = ModelCheckpoint.objects.create(name="c", path="checkpoints/job-2/final", base_model="tiny")
    response = client_for("operator").post(f"/jobs/checkpoints/{checkpoint.pk}/endpoint/")
    assert response.status_code == 302
    endpoint = ModelEndpoint.objects.get(name=f"checkpoint-{checkpoint.pk}")
    assert endpoint.backend == "transformers" and endpoint.model.endswith("checkpoints/job-2/final")
    assert client_for("viewer").post(f"/jobs/checkpoints/{checkpoint.pk}/endpoint/").status_code == 403


@pytest.mark.django_db(transaction=True)
def test_an_sft_job_streams_its_training_metrics_to_a_websocket(tiny_model, personas, client_for, celery_worker):
    from tests.jobs.test_jobs import run_and_watch

    trajectory = make_trajectory(8)
    job = Job.objects.create(
        kind="sft", queue="gpu", created_by=personas["operator"],
        config={"ids": str(trajectory.pk), "base_model": str(tiny_model), "l_max": 300, "max_steps": 4,
                "grad_accum": 1, "precision": "fp32", "save_steps": 1000},
    )
    events = run_and_watch(job, "gpu", client_for("viewer"))
    assert events[-1]["state"] == "succeeded", events[-1]["error"]
    points = [e for e in events if e["kind"] == "metric"]
    assert [p["step"] for p in points] == [1, 2, 3, 4]
    assert {"loss", "learning_rate", "grad_norm", "tokens_per_s"} <= set(points[0]["values"])


@pytest.mark.django_db
def test_sft_selects_accepted_trajectories_by_paper_source_and_score():
    from apps.papers.models import Paper
    from worker.engines.sft import select_trajectories

    paper = Paper.objects.create(slug="p", title="P")
    keep = Trajectory.objects.create(paper=paper, source="distilled", final_score=0.7, review="accepted")
    Trajectory.objects.create(paper=paper, source="distilled", final_score=0.2, review="accepted")
    Trajectory.objects.create(paper=paper, source="distilled", final_score=0.9, review="")
    rejected = Trajectory.objects.create(paper=paper, source="distilled", final_score=0.9, review="rejected")
    chosen = select_trajectories({"paper": "p", "source": "distilled", "min_score": 0.5})
    assert list(chosen) == [keep]
    assert list(select_trajectories({"ids": f"{keep.pk},{rejected.pk}"})) == [keep]
    assert not select_trajectories({"paper": "missing"}).exists()


@pytest.mark.django_db
def test_an_sft_checkpoint_opens_the_rl_form_with_itself_as_the_policy(client_for, personas):
    job = Job.objects.create(kind="sft", state=Job.State.SUCCEEDED, created_by=personas["operator"])
    checkpoint = ModelCheckpoint.objects.create(job=job, name="sft result", path="checkpoints/x", base_model="tiny")
    job.artifacts.create(name="model", path="checkpoints/x", kind="checkpoint", meta={"checkpoint": checkpoint.pk})
    link = f"/jobs/new/?kind=rl&amp;policy_checkpoint={checkpoint.pk}"
    assert link in client_for("operator").get("/jobs/checkpoints/").content.decode()
    assert link in client_for("operator").get(f"/jobs/{job.pk}/").content.decode()
    assert link not in client_for("viewer").get(f"/jobs/{job.pk}/").content.decode()  # viewers cannot launch
    form = client_for("operator").get(f"/jobs/new/?kind=rl&policy_checkpoint={checkpoint.pk}").content.decode()
    assert f'<option value="{checkpoint.pk}" selected>#{checkpoint.pk} sft result' in form
