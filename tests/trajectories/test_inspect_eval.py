"""Inspect .eval archives as current inspect-ai writes them (zstd members), named by sample and epoch."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from apps.trajectories.formats import read_trajectories
from apps.trajectories.models import Trajectory
from tests.trajectories.factories import INSPECT_HEADER, SAMPLES, epochs_eval, inspect_eval, inspect_sample


def test_a_zstd_eval_reads_every_epoch_under_its_own_name_with_score_and_metadata(tmp_path: Path) -> None:
    runs = list(read_trajectories(epochs_eval(tmp_path / "oxdna.eval", frame_bytes=64)))
    assert [r.title for r in runs] == [f"oxdna_simple:default (epoch {n})" for n in range(1, 7)]
    assert {r.task for r in runs} == {"oxdna_simple:default"}  # the same task, six attempts
    assert [r.score for r in runs] == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert runs[0].meta["metadata"] == {"family": "oxdna_simple", "difficulty": "9 minutes"}
    assert runs[0].meta["scores"]["oxdna_scorer"]["explanation"] == "checked the energy"
    assert runs[2].turns[1].text == "Attempt 3: fixed the temperature." and runs[2].model == "openai/gpt-5"


@pytest.mark.django_db
def test_the_epochs_of_a_deflated_eval_import_under_their_own_names_too(tmp_path: Path) -> None:
    call_command("import_trajectories", str(epochs_eval(tmp_path / "oxdna-deflate.eval", method=8)))
    titles = sorted(Trajectory.objects.values_list("title", flat=True))
    assert titles == [f"oxdna_simple:default (epoch {n})" for n in range(1, 7)]


def test_the_real_deflated_eval_still_reads_and_an_epoch_is_named_only_when_there_are_several() -> None:
    runs = list(read_trajectories(SAMPLES / "inspect-ai" / "class-eval.eval"))
    assert sorted(r.title for r in runs) == [f"inspect_evals/class_eval:ClassEval_{n}" for n in range(5)]
    assert all(r.score in (0.0, 1.0) and r.meta["score_from"] == "class_eval_scorer" for r in runs)


@pytest.mark.django_db
def test_an_archive_in_a_compression_nobody_reads_is_a_400_naming_it(client_for, tmp_path: Path) -> None:
    path = inspect_eval(tmp_path / "ppmd.eval",
                     {"header.json": INSPECT_HEADER, "samples/1_epoch_1.json": inspect_sample(1, "C")},
                     method=98)
    with path.open("rb") as fp:
        response = client_for("curator").post("/api/trajectories/import/", {"file": fp})
    assert response.status_code == 400, response.content
    assert "ppmd (method 98)" in response.json()["detail"] and not Trajectory.objects.exists()
    with pytest.raises(CommandError, match=r"nothing imported: .*ppmd \(method 98\)"):
        call_command("import_trajectories", str(path))


@pytest.mark.django_db
def test_the_import_command_reads_a_inspect_eval(tmp_path: Path, capsys) -> None:
    call_command("import_trajectories", str(epochs_eval(tmp_path / "oxdna.eval")))
    assert "6 trajectories imported" in capsys.readouterr().out
    assert sorted(Trajectory.objects.values_list("final_score", flat=True)) == [0.0] * 3 + [1.0] * 3
