"""Hostile input: deeply nested JSON, archives that expand, texts of hundreds of megabytes, PDFs
that inflate. Each is refused with a 4xx that names the limit (or stored with a visible cut and
reported), in memory and time that do not grow with what the input claims."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import tarfile
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.parsers import JSONParser as DrfJSONParser

from apps.core.parsers import JSONParser
from apps.core.untrusted import InputLimits
from apps.judging.judge.submission import SubmissionError, UploadLimits, extract_archive
from apps.trajectories.formats import TrajectoryFormatError, read_trajectories
from apps.trajectories.models import Trajectory, Turn
from apps.trajectories.services import TrajectoryImportError, import_trajectories
from tests.trajectories.factories import klong_jsonl
from tests.trajectories.test_import import TURNS

pytestmark = pytest.mark.django_db
MB = 1 << 20


def nested(levels: int) -> bytes:
    """The shape of the report: a chat whose content nests ``levels`` arrays deep."""
    return b'{"messages": [{"role": "user", "content": ' + b"[" * levels + b"]" * levels + b"}]}"


def peak_bytes(action) -> int:
    """Peak of Python allocations while ``action`` runs (its exception, if any, swallowed)."""
    tracemalloc.start()
    try:
        action()
    except (TrajectoryFormatError, TrajectoryImportError):
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


# --- JSON depth ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("role", "url"), [
    ("viewer", "/api/tokens/"),  # a viewer's own token request
    ("operator", "/api/jobs/"),
    ("viewer", "/api/trajectories/export-dataset/"),
    ("curator", "/api/paper-candidates/import/"),
])
def test_a_deeply_nested_json_body_is_a_400_that_says_where(client_for, role, url):
    response = client_for(role).post(url, b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                                     content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["detail"] == "JSON nested deeper than 64 levels (KLONG_MAX_JSON_DEPTH) at line 1, column 73"


def _api_views(patterns) -> list:
    found = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            found += _api_views(pattern.url_patterns)
        elif isinstance(pattern, URLPattern) and hasattr(pattern.callback, "cls"):
            found.append(pattern.callback)
    return found


def test_every_api_view_parses_json_with_the_depth_limit():
    views = _api_views(get_resolver().url_patterns)
    assert len(views) > 50
    for view in views:
        parsers = view.initkwargs.get("parser_classes") or view.cls.parser_classes
        plain = [p for p in parsers if issubclass(p, DrfJSONParser) and not issubclass(p, JSONParser)]
        assert not plain, f"{view.cls.__name__} parses JSON without the depth limit"


def test_a_deeply_nested_pipeline_in_the_launch_form_is_a_form_error(client_for):
    response = client_for("operator").post("/jobs/pipeline/", {"priority": 5, "stages": "[" * 5000 + "]" * 5000})
    assert response.status_code == 400
    assert b"JSON nested deeper than 64 levels (KLONG_MAX_JSON_DEPTH)" in response.content


def test_a_rubric_nested_deeper_than_the_limit_is_refused_with_the_line(client_for):
    body = json.dumps({"id": "r", "requirements": "x", "weight": 1, "sub_tasks": []})
    deep = body.replace('"sub_tasks": []', '"sub_tasks": [' + '{"sub_tasks": [' * 40 + "]}" * 40 + "]")
    upload = SimpleUploadedFile("deep.rubric.json", deep.encode())
    response = client_for("curator").post("/api/papers/import/", {"file": upload})
    assert response.status_code == 400
    assert "JSON nested deeper than 64 levels (KLONG_MAX_JSON_DEPTH) at line 1, column" in response.json()["detail"]


@pytest.mark.parametrize(("name", "body", "where"), [
    ("deep.json", nested(100_000), "$.messages[0].content" + "[0]" * 61),
    ("deep.jsonl", json.dumps({"messages": TURNS[:2]}).encode() + b"\n" + nested(100_000) + b"\n", "line 2"),
])
def test_a_deeply_nested_trajectory_file_is_a_400_naming_where(client_for, name, body, where):
    response = client_for("curator").post("/api/trajectories/import/", {"file": SimpleUploadedFile(name, body)})
    assert response.status_code == 400, response.content
    assert response.json()["position"] == where
    assert "JSON nested deeper than 64 levels (KLONG_MAX_JSON_DEPTH)" in response.json()["detail"]
    assert not Trajectory.all_objects.exists()


def test_reading_deep_json_costs_memory_linear_in_its_size(tmp_path):
    """40 KB of nesting took 1.9 GB: the reader copied the whole path at every level. Now the
    depth limit stops it at once, and even without a limit the reader's memory is linear."""
    path = tmp_path / "deep.json"
    path.write_bytes(nested(20_000))
    assert peak_bytes(lambda: list(read_trajectories(path))) < 4 * MB
    unlimited = InputLimits(json_depth=10**9)
    assert peak_bytes(lambda: list(read_trajectories(path, limits=unlimited))) < 16 * MB


# --- Inspect .eval archives ---------------------------------------------------------------------

def eval_archive(path: Path, samples: int = 1, message: str = "hi", header: dict | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("header.json", json.dumps(header or {"version": 2, "eval": {"task": "t", "model": "m"}}))
        for number in range(samples):
            sample = {"id": number, "epoch": 1, "messages": [{"role": "user", "content": message}]}
            archive.writestr(f"samples/{number}_epoch_1.json", json.dumps(sample))
    return path


SMALL_CAPS = InputLimits(unpacked_bytes=24 * MB, unpacked_member_bytes=4 * MB)


@pytest.mark.parametrize(("case", "limit"), [
    ("message", "'samples/0_epoch_1.json' in the .eval archive expands past the limit of 4,194,304 bytes "
                "(KLONG_MAX_UNPACKED_MEMBER_BYTES)"),
    ("header", "unreadable header: 'header.json' in the .eval archive expands past the limit of 4,194,304 bytes "
               "(KLONG_MAX_UNPACKED_MEMBER_BYTES)"),
    ("total", "The .eval archive expands past the limit of 25,165,824 bytes (KLONG_MAX_UNPACKED_BYTES)"),
])
def test_an_eval_archive_that_expands_past_a_cap_is_refused_in_bounded_memory(tmp_path, case, limit):
    path = tmp_path / "bomb.eval"
    if case == "message":  # a 20 MB message packs into 20 KB
        eval_archive(path, message="a" * (20 * MB))
    elif case == "header":
        eval_archive(path, header={"version": 2, "eval": {"task": "t"}, "plan": "p" * (20 * MB)})
    else:
        eval_archive(path, samples=10, message="a" * (3 * MB))
    assert path.stat().st_size < 700_000
    with pytest.raises(TrajectoryFormatError) as refused:
        list(read_trajectories(path, limits=SMALL_CAPS))
    assert refused.value.message == limit
    assert peak_bytes(lambda: list(read_trajectories(path, limits=SMALL_CAPS))) < 12 * MB


def test_an_eval_bomb_upload_is_a_400_naming_the_limit(client_for, settings):
    settings.KLONG_MAX_UNPACKED_MEMBER_BYTES = 4 * MB
    body = eval_archive(Path(settings.DATA_DIR) / "bomb.eval", message="a" * (16 * MB)).read_bytes()
    response = client_for("curator").post("/api/trajectories/import/", {"file": SimpleUploadedFile("b.eval", body)})
    assert response.status_code == 400
    assert "expands past the limit of 4,194,304 bytes (KLONG_MAX_UNPACKED_MEMBER_BYTES)" in response.json()["detail"]


def test_real_eval_logs_import_under_the_default_caps():
    from tests.trajectories.factories import SAMPLES

    result = import_trajectories(SAMPLES / "inspect-ai" / "class-eval.eval")
    assert len(result.trajectories) == 5 and not result.skipped


# --- Submission archives ------------------------------------------------------------------------

def tar_of_zeros(path: Path, size: int, compression: str) -> Path:
    """A tar with one member of ``size`` zero bytes, compressed without ever holding it whole:
    bz2 packs 16 MiB of zeros into 45 bytes and reads concatenated streams as one."""
    info = tarfile.TarInfo("zeros.bin")
    info.size = size
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    if compression == "bz2":
        chunk = bz2.compress(b"\0" * (16 * MB))
        path.write_bytes(bz2.compress(header) + chunk * (size // (16 * MB)))
    else:
        data = header + b"\0" * size + b"\0" * (-size % 512) + b"\0" * 1024
        path.write_bytes(gzip.compress(data) if compression == "gz" else lzma.compress(data))
    return path


def test_a_small_tar_bz2_declaring_gigabytes_is_refused_before_it_is_decompressed(tmp_path):
    """A 7.7 KB tar.bz2 declaring 6 GiB burned 29 s of CPU before its refusal."""
    archive = tar_of_zeros(tmp_path / "bomb.tar.bz2", 6 << 30, "bz2")
    assert archive.stat().st_size < 32_000
    started = time.process_time()
    with pytest.raises(SubmissionError, match=r"'zeros.bin' in the submission expands past the limit of "
                                              r"268,435,456 bytes \(KLONG_MAX_UNPACKED_MEMBER_BYTES\)"):
        extract_archive(archive, tmp_path / "out", UploadLimits())
    assert time.process_time() - started < 1.0
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("compression", ["gz", "bz2", "xz"])
def test_every_accepted_compression_is_capped_per_file_and_in_total(tmp_path, compression):
    archive = tar_of_zeros(tmp_path / f"big.tar.{compression}", 16 * MB, compression)
    with pytest.raises(SubmissionError, match=r"'zeros.bin' in the submission expands past the limit of "
                                              r"1,048,576 bytes \(KLONG_MAX_UNPACKED_MEMBER_BYTES\)"):
        extract_archive(archive, tmp_path / "one", UploadLimits(max_file_bytes=MB))
    with pytest.raises(SubmissionError, match=r"The submission expands past the limit of 2,097,152 bytes "
                                              r"\(KLONG_MAX_UNPACKED_BYTES\)"):
        extract_archive(archive, tmp_path / "all", UploadLimits(max_total_bytes=2 * MB))
    assert not (tmp_path / "one").exists() and not (tmp_path / "all").exists()
    dest = extract_archive(archive, tmp_path / "fits", UploadLimits())
    assert (dest / "zeros.bin").stat().st_size == 16 * MB


def test_a_submission_bomb_upload_is_a_400_naming_the_limit(client_for, personas, settings):
    from tests.hardening.world import build_world

    world = build_world("bomb", personas["admin"])
    archive = tar_of_zeros(Path(settings.DATA_DIR) / "bomb.tar.bz2", 6 << 30, "bz2")
    response = client_for("operator").post("/api/judge-runs/", {
        "paper": world.paper.slug, "endpoint": world.endpoint.name,
        "upload": SimpleUploadedFile("bomb.tar.bz2", archive.read_bytes())})
    assert response.status_code == 400
    assert "KLONG_MAX_UNPACKED_MEMBER_BYTES" in " ".join(response.json()["detail"])


# --- PDFs ---------------------------------------------------------------------------------------

def flate_bomb_pdf() -> bytes:
    """One page whose FlateDecode content stream inflates past pypdf's 75 MB cap (from 80 KB)."""
    packer = zlib.compressobj(9)
    stream = packer.compress(b"BT /F1 12 Tf 72 720 Td (x) Tj ET ")
    stream += b"".join(packer.compress(b" " * MB) for _ in range(80)) + packer.flush()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO(b"%PDF-1.4\n")
    out.seek(0, io.SEEK_END)
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.write(b"".join(b"%010d 00000 n \n" % offset for offset in offsets))
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def test_a_pdf_with_a_flate_bomb_is_refused_on_attach_pdf(client_for):
    from apps.papers.models import Paper, PaperCandidate

    candidate = PaperCandidate.objects.create(key="arxiv:1", title="Bomb", arxiv_id="1", source_format="arxiv")
    response = client_for("curator").post(f"/api/paper-candidates/{candidate.pk}/attach-pdf/",
                                          {"pdf": SimpleUploadedFile("bomb.pdf", flate_bomb_pdf())})
    assert response.status_code == 400, response.content
    assert "This PDF is refused: it goes past a safety limit of the PDF reader" in response.json()["pdf"][0]
    assert not Paper.objects.exists()


# --- Bodies of the wrong shape ------------------------------------------------------------------

def test_a_dataset_export_body_that_is_not_an_object_is_a_400(client_for):
    response = client_for("viewer").post("/api/trajectories/export-dataset/", [1], content_type="application/json")
    assert response.status_code == 400 and "must be a JSON object" in response.json()["detail"]


# --- Huge texts in trajectories -----------------------------------------------------------------

def test_texts_over_the_limit_are_stored_cut_with_a_marker_and_reported(client_for, settings, tmp_path):
    settings.KLONG_MAX_TURN_CHARS = 1000
    long_text = "HEAD" + "x" * 5000 + "TAIL"
    turns = [
        {"role": "user", "text": "short"},
        {"role": "assistant", "text": long_text, "reasoning": "r" * 1500,
         "tool_calls": [{"id": "1", "name": "write_file", "arguments": {"content": "y" * 3000}}]},
    ]
    path = klong_jsonl(tmp_path / "long.jsonl", [turns])
    response = client_for("curator").post("/api/trajectories/import/",
                                          {"file": SimpleUploadedFile("long.jsonl", path.read_bytes())})
    assert response.status_code == 201, response.content
    answer = response.json()
    assert answer["clipped"] == [
        "long.jsonl [line 1]: turn 1 text (5,008 characters)",
        "long.jsonl [line 1]: turn 1 reasoning (1,500 characters)",
        "long.jsonl [line 1]: turn 1 tool call arguments (3,015 characters)",
    ]
    assert "1,000 characters (KLONG_MAX_TURN_CHARS)" in answer["clipped_note"]
    turn = Turn.objects.get(index=1)
    assert turn.text.startswith("HEAD") and turn.text.endswith("TAIL")
    assert "[... 4008 characters cut (KLONG_MAX_TURN_CHARS = 1,000) ...]" in turn.text
    assert len(turn.text) < 1100 and len(turn.reasoning) < 1100 and len(turn.tool_calls[0]["arguments"]) < 1100
    assert Trajectory.objects.get().meta["clipped"]["count"] == 3


def test_trajectory_lists_never_read_run_meta_or_paper_texts(client_for):
    from apps.papers.models import Paper

    paper = Paper.objects.create(slug="p", title="P", markdown="m" * 10_000)
    Trajectory.objects.create(title="run", paper=paper, meta={"scores": {"explanation": "e" * 10_000}})
    for url in ("/api/trajectories/", "/trajectories/"):
        with CaptureQueriesContext(connection) as queries:
            assert client_for("viewer").get(url).status_code == 200
        selects = [q["sql"] for q in queries.captured_queries if "trajectories_trajectory" in q["sql"]]
        assert selects and not [sql for sql in selects if '"meta"' in sql or '"markdown"' in sql], selects


# --- Short import transactions ------------------------------------------------------------------

@pytest.mark.embedded  # SQLite, one writer at a time, is where a long transaction blocked everyone
@pytest.mark.django_db(transaction=True)
def test_an_import_commits_each_run_alone_and_shows_them_together_at_the_end(tmp_path):
    path = klong_jsonl(tmp_path / "runs.jsonl", [TURNS] * 3)
    seen = []

    def between_runs(_imported) -> None:
        # No transaction stays open while the import goes on: another writer gets the lock at once.
        if connection.vendor == "sqlite":
            import sqlite3

            other = sqlite3.connect(connection.settings_dict["NAME"], timeout=0.1)
            other.execute("BEGIN IMMEDIATE")
            other.rollback()
            other.close()
        seen.append((connection.in_atomic_block, Trajectory.objects.count(), Trajectory.all_objects.count()))

    import_trajectories(path, on_trajectory=between_runs)
    assert seen == [(False, 0, 1), (False, 0, 2), (False, 0, 3)]
    assert Trajectory.objects.count() == 3 and Turn.objects.count() == 12


@pytest.mark.django_db(transaction=True)
def test_a_failed_import_leaves_no_hidden_run_behind(tmp_path):
    path = klong_jsonl(tmp_path / "runs.jsonl", [TURNS] * 3, bad_line=12)
    with pytest.raises(TrajectoryImportError, match="line 12"):
        import_trajectories(path)
    assert not Trajectory.all_objects.exists() and not Turn.objects.exists()


def test_the_import_job_discards_the_runs_a_killed_attempt_left_hidden(settings):
    from apps.jobs.models import Job
    from apps.jobs.progress import Progress
    from worker.engines.trajectory_import import run

    folder = Path(settings.DATA_DIR) / "imports" / "again"
    folder.mkdir(parents=True, exist_ok=True)
    path = klong_jsonl(folder / "runs.jsonl", [TURNS, TURNS])
    job = Job.objects.create(kind="trajectory_import", title="import", config={"path": str(path)})
    # What a worker killed after the first run left: the run, hidden under the job's batch.
    leftover = Trajectory.all_objects.create(title="task-0", import_batch=f"job-{job.pk}")
    Turn.objects.create(trajectory=leftover, index=0, role="user", text="u")
    run(job, Progress(job.pk))
    assert Trajectory.all_objects.count() == 2 and Trajectory.objects.count() == 2
    assert not Trajectory.all_objects.filter(pk=leftover.pk).exists()


def test_deeply_nested_tool_arguments_from_a_model_get_a_bad_arguments_answer():
    from worker.agent.tools import run_tool

    outcome = run_tool(None, "bash", '{"cmd": ' + "[" * 100_000 + "]" * 100_000 + "}", timeout_s=1)
    assert outcome.output.startswith("Bad arguments for bash: JSON nested deeper than 64 levels (KLONG_MAX_JSON_DEPTH)")
