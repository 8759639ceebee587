"""Submissions: the folder an agent left, and safe extraction of uploaded tar/zip archives.

Pure Python (no Django). An upload is untrusted: every member path is checked before anything is
written (no absolute paths, no ``..``, no links or devices, nothing outside the target folder),
and decompressed sizes are capped (per file and in total) both as declared in the archive and as
actually decompressed, so a forged header cannot smuggle a bomb past the check. A tar is read as
one stream, each member checked as its header arrives: a bomb stops at the cap instead of being
decompressed whole before its size is looked at.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from apps.core.domain import Invalid
from apps.core.untrusted import (
    CHUNK_BYTES,
    DEFAULT_MAX_UNPACKED_BYTES,
    DEFAULT_MAX_UNPACKED_MEMBER_BYTES,
    InputLimits,
    UnpackBudget,
    UnpackedTooLarge,
)

# Folders never read for grading: environments, caches, VCS (PaperBench's list).
SKIPPED_DIRS = frozenset({
    "venv", ".venv", ".env", "wandb", ".egg-info", ".git", ".github", "__pycache__", "node_modules",
})
DOC_EXTENSIONS = frozenset({".md", ".txt", ".rst"})
CODE_EXTENSIONS = frozenset({
    ".py", ".R", ".Rmd", ".m", ".jl", ".c", ".h", ".cpp", ".hpp", ".cc", ".cxx", ".hxx", ".java", ".js",
    ".ts", ".scala", ".go", ".rs", ".sh", ".config", ".cfg", ".json", ".yaml", ".yml", ".toml", ".ini",
    ".ipynb",
})
# Outputs a reproduction writes: tables, logs, reports. Result Analysis leaves see only these + docs.
OUTPUT_EXTENSIONS = frozenset({
    ".csv", ".tsv", ".psv", ".json", ".jsonl", ".html", ".xml", ".yaml", ".yml", ".toml", ".arff", ".tex",
    ".svm", ".libsvm", ".log", ".out",
})
RESULT_ANALYSIS = "Result Analysis"


class SubmissionError(Invalid, ValueError):
    """An upload was refused (unsafe path, link, too large) or a submission cannot be read."""


@dataclass(frozen=True, slots=True)
class UploadLimits:
    """Decompressed bytes in total and per file (KLONG_MAX_UNPACKED_BYTES and _MEMBER_BYTES by
    default), and how many entries."""

    max_total_bytes: int = DEFAULT_MAX_UNPACKED_BYTES
    max_files: int = 20_000
    max_file_bytes: int = DEFAULT_MAX_UNPACKED_MEMBER_BYTES

    @classmethod
    def current(cls) -> UploadLimits:
        limits = InputLimits.current()
        return cls(max_total_bytes=limits.unpacked_bytes, max_file_bytes=limits.unpacked_member_bytes)

    def budget(self) -> UnpackBudget:
        return UnpackBudget(
            InputLimits(unpacked_bytes=self.max_total_bytes, unpacked_member_bytes=self.max_file_bytes),
            "the submission",
        )


def check_member_name(name: str) -> PurePosixPath:
    """A relative path inside the archive's folder; absolute paths, ``..`` and NULs are refused."""
    if not name or "\x00" in name:
        raise SubmissionError("an archive member has an empty or invalid name")
    normalised = name.replace("\\", "/")
    path = PurePosixPath(normalised)
    if path.is_absolute() or normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        raise SubmissionError(f"absolute path in archive: {name!r}")
    if ".." in path.parts:
        raise SubmissionError(f"path leaves the submission folder: {name!r}")
    return path


def _inside(dest: Path, rel: PurePosixPath) -> Path:
    target = (dest / rel).resolve()
    if target != dest and dest not in target.parents:
        raise SubmissionError(f"path leaves the submission folder: {str(rel)!r}")
    return target


def extract_archive(archive: Path, dest: Path, limits: UploadLimits | None = None) -> Path:
    """Extract a .tar(.gz/.bz2/.xz) or .zip into the empty or new folder ``dest``; refuse unsafe input.

    On refusal nothing is left behind: ``dest`` is removed again.
    """
    limits = limits or UploadLimits.current()
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, dest, limits)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, dest, limits)
        else:
            raise SubmissionError("not a zip or tar archive")
    except SubmissionError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except UnpackedTooLarge as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise SubmissionError(str(exc)) from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, NotImplementedError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise SubmissionError(f"unreadable archive: {exc}") from None
    return dest


def _copy_counted(src: BinaryIO, out_path: Path) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK_BYTES)


def _extract_zip(archive: Path, dest: Path, limits: UploadLimits) -> None:
    budget = limits.budget()
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > limits.max_files:
            raise SubmissionError(f"the archive has more than {limits.max_files} files")
        plan = []
        for info in infos:
            rel = check_member_name(info.filename)
            mode = (info.external_attr >> 16) & 0o170000
            if mode and mode not in (stat.S_IFREG, stat.S_IFDIR):
                # zipfile would write a symlink's target as a file; refuse it like tar links.
                raise SubmissionError(f"links and special files are not allowed: {info.filename!r}")
            budget.check_declared(info.filename, info.file_size)
            plan.append((info, _inside(dest, rel)))
        budget.check_declared("", 0, sum(i.file_size for i in infos))
        for info, target in plan:
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            with zf.open(info) as src:
                _copy_counted(budget.open(src, info.filename), target)


def _extract_tar(archive: Path, dest: Path, limits: UploadLimits) -> None:
    budget = limits.budget()
    declared = 0
    # Stream mode ("r|"): members in order, each extracted as its header arrives; every byte
    # tarfile reads (headers, long names, pax records, padding) is counted by the budget.
    with (
        open(archive, "rb") as raw,
        _decompressed(raw) as stream,
        tarfile.open(fileobj=budget.open(stream, ""), mode="r|") as tf,
    ):
        for count, member in enumerate(tf, start=1):
            if count > limits.max_files:
                raise SubmissionError(f"the archive has more than {limits.max_files} files")
            budget.start_member(member.name)
            declared += member.size
            _extract_tar_member(tf, member, dest, budget, declared)
            # What tarfile reads next (padding, the next header) counts apart from this member.
            budget.start_member(f"the entry after {member.name}")


def _extract_tar_member(
    tf: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, budget: UnpackBudget, declared: int
) -> None:
    rel = check_member_name(member.name)
    if member.issym() or member.islnk():
        link = PurePosixPath(member.linkname.replace("\\", "/"))
        base = rel.parent if member.issym() else PurePosixPath()
        if link.is_absolute() or ".." in (base / link).parts:
            raise SubmissionError(f"link points out of the submission folder: {member.name!r}")
        # Links inside the folder are skipped rather than extracted: graders never follow them.
        return
    if not (member.isfile() or member.isdir()):
        raise SubmissionError(f"special files are not allowed: {member.name!r}")
    budget.check_declared(member.name, member.size, declared)
    target = _inside(dest, rel)
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    src = tf.extractfile(member)
    if src is None:
        return
    with src:
        _copy_counted(src, target)
    os.utime(target, (member.mtime, member.mtime))  # Result Analysis reads output times


def _decompressed(raw: BinaryIO) -> BinaryIO:
    """The tar inside a .tar, .tar.gz, .tar.bz2 or .tar.xz, as a stream (told apart by magic bytes)."""
    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw, mode="rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw, mode="rb")
    return raw


@dataclass(frozen=True, slots=True)
class SubmissionFile:
    path: str  # relative, POSIX separators
    size: int
    mtime: float


class Submission:
    """A read-only view of a submission folder: the files a judge may read, with size caps."""

    def __init__(self, root: Path, *, reproduce_started_at: float | None = None, max_depth: int = 8) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise SubmissionError(f"submission folder not found: {root}")
        # When the reproduction started (epoch seconds), if known: outputs are files written after it.
        self.reproduce_started_at = reproduce_started_at
        self.max_depth = max_depth
        self._files: list[SubmissionFile] | None = None

    def files(self) -> list[SubmissionFile]:
        """Every regular file (links never followed, skipped folders left out), sorted by path."""
        if self._files is None:
            found: list[SubmissionFile] = []
            for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
                rel_dir = Path(dirpath).relative_to(self.root)
                if len(rel_dir.parts) >= self.max_depth:
                    dirnames[:] = []
                dirnames[:] = sorted(d for d in dirnames if not _skipped(d))
                for name in filenames:
                    full = Path(dirpath) / name
                    try:
                        st = full.lstat()
                    except OSError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        found.append(SubmissionFile((rel_dir / name).as_posix(), st.st_size, st.st_mtime))
            self._files = sorted(found, key=lambda f: f.path)
        return self._files

    def candidates(self, category: str | None) -> list[SubmissionFile]:
        """Files a leaf of ``category`` may see (PaperBench's rule: Result Analysis gets docs and outputs)."""
        chosen = []
        for f in self.files():
            suffix = PurePosixPath(f.path).suffix
            if f.path in ("reproduce.sh", "reproduce.log"):
                continue  # shown in their own prompt sections
            if category == RESULT_ANALYSIS:
                written_by_run = self.reproduce_started_at is None or f.mtime >= self.reproduce_started_at
                if suffix in DOC_EXTENSIONS or (suffix in OUTPUT_EXTENSIONS and written_by_run):
                    chosen.append(f)
            elif suffix in DOC_EXTENSIONS or suffix in CODE_EXTENSIONS:
                chosen.append(f)
        return chosen

    def read_text(self, rel: str, max_bytes: int) -> str | None:
        """Up to ``max_bytes`` of a file as text (None if missing, binary or outside the folder)."""
        full = (self.root / rel).resolve()
        if self.root not in full.parents or not full.is_file() or full.is_symlink():
            return None
        try:
            with open(full, "rb") as fh:
                data = fh.read(max_bytes + 1)
        except OSError:
            return None
        if b"\x00" in data[:8192]:
            return None
        text = data[:max_bytes].decode("utf-8", errors="replace")
        if len(data) > max_bytes:
            text += f"\n[... truncated at {max_bytes} bytes ...]"
        return text

    def read_head_tail(self, rel: str, max_bytes: int) -> str | None:
        """A long log's head and tail (where setup errors and final results are), within ``max_bytes``."""
        full = self.root / rel
        try:
            size = full.stat().st_size
        except OSError:
            return None
        if size <= max_bytes:
            return self.read_text(rel, max_bytes)
        half = max_bytes // 2
        with open(full, "rb") as fh:
            head = fh.read(half)
            fh.seek(size - half)
            tail = fh.read(half)
        cut = size - 2 * half
        return (
            head.decode("utf-8", errors="replace")
            + f"\n[... {cut} bytes omitted ...]\n"
            + tail.decode("utf-8", errors="replace")
        )


def _skipped(name: str) -> bool:
    return name in SKIPPED_DIRS or name.endswith(".egg-info")
