from __future__ import annotations

import io
import os
import tarfile
import zipfile

import pytest

from apps.judging.judge.ranking import FileIndex
from apps.judging.judge.submission import Submission, SubmissionError, UploadLimits, extract_archive
from tests.judging.helpers import make_submission


def make_tar(path, members: dict[str, bytes], links: dict[str, str] | None = None, hard: bool = False):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return path


def make_zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_a_safe_tar_upload_is_extracted(tmp_path):
    archive = make_tar(tmp_path / "ok.tar.gz", {"reproduce.sh": b"echo hi\n", "src/model.py": b"x = 1\n"})
    dest = extract_archive(archive, tmp_path / "out")
    assert (dest / "src" / "model.py").read_text() == "x = 1\n"


@pytest.mark.parametrize("name", ["../evil.py", "src/../../evil.py", "..\\evil.py"])
def test_a_tar_member_with_dotdot_is_refused_and_nothing_is_written(tmp_path, name):
    archive = make_tar(tmp_path / "bad.tar.gz", {"fine.py": b"1", name: b"evil"})
    with pytest.raises(SubmissionError, match="leaves the submission folder"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "evil.py").exists()


def test_a_zip_member_with_dotdot_is_refused(tmp_path):
    archive = make_zip(tmp_path / "bad.zip", {"../../evil.py": b"evil"})
    with pytest.raises(SubmissionError, match="leaves the submission folder"):
        extract_archive(archive, tmp_path / "out")


@pytest.mark.parametrize("name", ["/etc/cron.d/evil", "C:/evil.py"])
def test_an_absolute_member_path_is_refused(tmp_path, name):
    archive = make_zip(tmp_path / "abs.zip", {name: b"evil"})
    with pytest.raises(SubmissionError, match="absolute path"):
        extract_archive(archive, tmp_path / "out")


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside", "sub/../../outside"])
def test_a_symlink_pointing_out_of_the_folder_is_refused(tmp_path, target):
    archive = make_tar(tmp_path / "link.tar.gz", {"a.py": b"1"}, links={"link": target})
    with pytest.raises(SubmissionError, match="link points out"):
        extract_archive(archive, tmp_path / "out")


def test_a_hard_link_out_of_the_folder_is_refused(tmp_path):
    archive = make_tar(tmp_path / "hard.tar.gz", {"a.py": b"1"}, links={"h": "../x"}, hard=True)
    with pytest.raises(SubmissionError, match="link points out"):
        extract_archive(archive, tmp_path / "out")


def test_a_zip_symlink_member_is_refused(tmp_path):
    archive = tmp_path / "symlink.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(SubmissionError, match="links and special files"):
        extract_archive(archive, tmp_path / "out")


def test_an_upload_over_the_size_limit_is_refused(tmp_path):
    archive = make_zip(tmp_path / "big.zip", {"big.txt": b"0" * 5000})
    with pytest.raises(SubmissionError, match="expands past the limit of 1,000 bytes"):
        extract_archive(archive, tmp_path / "out", UploadLimits(max_total_bytes=1000))


def test_too_many_files_are_refused(tmp_path):
    archive = make_zip(tmp_path / "many.zip", {f"f{i}.txt": b"x" for i in range(5)})
    with pytest.raises(SubmissionError, match="more than 3 files"):
        extract_archive(archive, tmp_path / "out", UploadLimits(max_files=3))


def test_something_that_is_no_archive_is_refused(tmp_path):
    bogus = tmp_path / "x.zip"
    bogus.write_bytes(b"not an archive at all")
    with pytest.raises(SubmissionError, match="not a zip or tar"):
        extract_archive(bogus, tmp_path / "out")


def test_files_matching_the_requirement_rank_first(tmp_path):
    sub = Submission(make_submission(tmp_path / "s"))
    ranked = FileIndex(sub).rank("The CIFAR-10 dataset loader is implemented", sub.candidates("Code Development"))
    assert ranked[0].path == "data.py"
    assert ranked[0].relevance > ranked[-1].relevance


def test_result_analysis_leaves_see_only_docs_and_outputs_written_by_the_run(tmp_path):
    root = make_submission(tmp_path / "s")
    old = root / "old_results.csv"
    old.write_text("stale")
    os.utime(old, (1000, 1000))
    sub = Submission(root, reproduce_started_at=2000)
    paths = {f.path for f in sub.candidates("Result Analysis")}
    assert paths == {"README.md", "results.csv"}
    code_paths = {f.path for f in sub.candidates("Code Development")}
    assert "train.py" in code_paths and "results.csv" not in code_paths and "model.bin" not in code_paths


def test_skipped_folders_and_links_are_never_read(tmp_path):
    root = make_submission(tmp_path / "s")
    (root / ".venv").mkdir()
    (root / ".venv" / "site.py").write_text("x")
    (tmp_path / "secret.txt").write_text("secret")
    (root / "escape.txt").symlink_to(tmp_path / "secret.txt")
    sub = Submission(root)
    paths = {f.path for f in sub.files()}
    assert ".venv/site.py" not in paths and "escape.txt" not in paths
    assert sub.read_text("../secret.txt", 100) is None
    assert sub.read_text("escape.txt", 100) is None
