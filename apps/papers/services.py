"""Papers in and out of the PaperBench layout: folders, zips, bare rubric.json files.

A PaperBench paper folder holds rubric.json (required), blacklist.txt, config.yaml, paper.md,
addendum.md and judge.addendum.md. The shared samples use a flat layout instead:
``rubrics/<paper>.rubric.json`` beside ``<paper>.blacklist.txt`` and ``<paper>.config.yaml``.
Both are read into a ``PaperBundle`` (bytes only, no database), then ``import_paper`` checks
the whole rubric first and writes everything in one transaction: refused whole, or stored whole.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import yaml
from django.core.files import File
from django.db import transaction
from django.db.models import F
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.text import slugify

from apps.core.domain import Conflict, Invalid, TooLarge
from apps.core.untrusted import InputLimits, UnpackBudget, UnpackedTooLarge
from apps.judging.judge.submission import SubmissionError, check_member_name
from apps.papers.models import Paper
from apps.rubrics.models import RubricVersion
from apps.rubrics.services.parsing import parse_rubric
from apps.rubrics.services.store import export_draft
from apps.rubrics.services.versions import import_rubric_tree
from apps.rubrics.validation import Problem

RUBRIC_FILE = "rubric.json"
# Bundle attribute -> file name in a paper folder (and suffix in the flat layout).
TEXT_FILES: dict[str, str] = {
    "blacklist": "blacklist.txt",
    "config": "config.yaml",
    "paper_md": "paper.md",
    "addendum": "addendum.md",
    "judge_addendum": "judge.addendum.md",
}
_GRADED_SUFFIXES = (".rubric.json", ".json")


class BundleError(Invalid, ValueError):
    """The upload or folder is not a PaperBench paper (no rubric.json, bad zip...)."""


class BundleTooLarge(TooLarge, BundleError):
    """The upload, or what its zip expands to, is over a size limit."""


@dataclass(slots=True)
class PaperBundle:
    """One paper's files as bytes/text, however they were laid out."""

    slug: str
    rubric: bytes
    source: str
    texts: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class ImportResult:
    paper: Paper
    version: RubricVersion | None
    created: bool
    node_count: int
    warnings: list[Problem]


# ---------------------------------------------------------------------------------------------
# Reading bundles


def slug_from_filename(name: str) -> str:
    """``bam.rubric.json`` -> ``bam``; ``all-in-one.judge_eval.json`` -> ``all-in-one-judge_eval``."""
    base = PurePosixPath(name).name
    for suffix in _GRADED_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return slugify(base.replace(".", "-")) or "paper"


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def read_paper_folder(folder: Path) -> PaperBundle:
    rubric = folder / RUBRIC_FILE
    if not rubric.is_file():
        raise BundleError(f"{folder}: no {RUBRIC_FILE}")
    texts = {attr: _read_text(folder / name) for attr, name in TEXT_FILES.items() if (folder / name).is_file()}
    return PaperBundle(slugify(folder.name) or "paper", rubric.read_bytes(), str(folder), texts)


def read_rubric_file(path: Path) -> PaperBundle:
    """A bare rubric file; flat-layout siblings (``<paper>.blacklist.txt`` ...) come along."""
    if path.name == RUBRIC_FILE:
        return read_paper_folder(path.parent)
    stem = path.name[: -len(".rubric.json")] if path.name.endswith(".rubric.json") else None
    texts: dict[str, str] = {}
    if stem:
        for attr, name in TEXT_FILES.items():
            sibling = path.with_name(f"{stem}.{name}")
            if sibling.is_file():
                texts[attr] = _read_text(sibling)
    return PaperBundle(slug_from_filename(path.name), path.read_bytes(), str(path), texts)


def find_bundles(path: Path) -> list[PaperBundle]:
    """Every paper under ``path``: a paper folder, a bare rubric file, a folder of paper
    folders, or a flat folder of ``<paper>.rubric.json`` files (searched recursively). A folder
    with no ``*.rubric.json`` takes its other ``*.json`` files as bare rubrics (judge_eval trees,
    fixtures)."""
    path = Path(path)
    if path.is_file():
        return [read_rubric_file(path)]
    if not path.is_dir():
        raise BundleError(f"{path}: no such file or folder")
    bundles = _bundles_in(path)
    if not bundles:
        raise BundleError(f"{path}: no {RUBRIC_FILE} or *.json rubric found")
    return bundles


def _bundles_in(folder: Path) -> list[PaperBundle]:
    if (folder / RUBRIC_FILE).is_file():
        return [read_paper_folder(folder)]
    children = sorted(folder.iterdir())
    files = [c for c in children if c.is_file() and c.name.endswith(".json")]
    rubric_files = [c for c in files if c.name.endswith(".rubric.json")]
    bundles = [read_rubric_file(c) for c in (rubric_files or files)]
    for child in children:
        if child.is_dir() and not child.name.startswith("."):
            bundles.extend(_bundles_in(child))
    return bundles


def read_paper_zip(upload: BinaryIO, name: str, max_bytes: int) -> PaperBundle:
    """A zip of one paper folder (files at the top or inside one folder), or a bare .json."""
    data = upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise BundleTooLarge(f"The upload is larger than the limit of {max_bytes:,} bytes")
    if name.lower().endswith(".json"):
        return PaperBundle(slug_from_filename(name), data, name)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise BundleError("The upload is not a zip file (or a rubric .json)") from None
    try:
        with archive:
            return _bundle_from_zip(archive, name, _paper_zip_budget(max_bytes))
    except UnpackedTooLarge as exc:
        raise BundleTooLarge(f"The zip is refused: {exc}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        # A damaged or forged archive (e.g. sizes in the headers that lie): refused, never a 500.
        raise BundleError(f"The zip is damaged or forged: {exc}") from None


def _paper_zip_budget(max_bytes: int) -> UnpackBudget:
    # Everything read is held in memory: no more than the upload limit, nor the archive caps.
    limits = InputLimits.current()
    total, setting = min((max_bytes, "KLONG_MAX_UPLOAD_BYTES"), (limits.unpacked_bytes, "KLONG_MAX_UNPACKED_BYTES"))
    member = min(limits.unpacked_member_bytes, total)
    return UnpackBudget(InputLimits(unpacked_bytes=total, unpacked_member_bytes=member), "the zip", setting)


def _bundle_from_zip(archive: zipfile.ZipFile, name: str, budget: UnpackBudget) -> PaperBundle:
    for info in archive.infolist():
        try:
            check_member_name(info.filename)
        except SubmissionError as exc:
            raise BundleError(f"The zip is refused: {exc}") from None
    members = {i.filename: i for i in archive.infolist() if not i.is_dir() and "__MACOSX" not in i.filename}
    # Uncompressed sizes count too, as declared and as read: a small zip may expand into gigabytes.
    for info in members.values():
        budget.check_declared(info.filename, info.file_size)
    budget.check_declared("", 0, sum(i.file_size for i in members.values()))
    rubric_names = [m for m in members if PurePosixPath(m).name == RUBRIC_FILE]
    if not rubric_names:
        raise BundleError(f"The zip has no {RUBRIC_FILE}")
    if len(rubric_names) > 1:
        raise BundleError(f"The zip has {len(rubric_names)} {RUBRIC_FILE} files; upload one paper per zip")
    folder = PurePosixPath(rubric_names[0]).parent

    def read(member: str) -> bytes:
        with archive.open(member) as fp, budget.open(fp, member) as counted:
            return counted.read()

    texts: dict[str, str] = {}
    for attr, file_name in TEXT_FILES.items():
        member = str(folder / file_name) if str(folder) != "." else file_name
        if member in members:
            texts[attr] = read(member).decode("utf-8", errors="replace")
    slug_source = folder.name if str(folder) != "." else PurePosixPath(name).stem
    return PaperBundle(slugify(slug_source) or "paper", read(rubric_names[0]), name, texts)


# ---------------------------------------------------------------------------------------------
# Import


def parse_blacklist(text: str) -> list[str]:
    """PaperBench writes ``none`` for an empty blacklist; one URL per line otherwise."""
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if line and line.lower() != "none" and not line.startswith("#")]


def parse_config(text: str) -> dict[str, Any]:
    try:
        value = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise BundleError(f"config.yaml is not valid YAML: {exc}") from None
    if not isinstance(value, dict):
        raise BundleError("config.yaml must be a mapping (id: ..., title: ...)")
    return value


def _title_from_markdown(text: str) -> str:
    match = re.search(r"^#\s+(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else ""


def import_paper(bundle: PaperBundle, user=None, *, slug: str | None = None) -> ImportResult:
    """Check the rubric whole, then store paper + draft + version in one transaction.

    An existing paper with the same id gets its fields updated, its draft replaced and a new
    version (none when the tree is unchanged), so re-running an import is harmless.
    """
    parsed = parse_rubric(bundle.rubric)  # raises RubricRefused before any write
    config = parse_config(bundle.texts["config"]) if "config" in bundle.texts else {}
    slug = slugify(str(slug or config.get("id") or bundle.slug))[:200] or "paper"
    fields: dict[str, Any] = {}
    title = str(config.get("title") or "") or _title_from_markdown(bundle.texts.get("paper_md", ""))
    if title:
        fields["title"] = title[:500]
    if "blacklist" in bundle.texts:
        fields["blacklist"] = parse_blacklist(bundle.texts["blacklist"])
    for attr, model_field in (("paper_md", "markdown"), ("addendum", "addendum"),
                              ("judge_addendum", "judge_addendum")):
        if attr in bundle.texts:
            fields[model_field] = bundle.texts[attr]
    with transaction.atomic():
        paper, created = Paper.objects.select_for_update().get_or_create(
            slug=slug, defaults={"title": fields.pop("title", slug), **fields}
        )
        if not created and fields:
            for name, value in fields.items():
                setattr(paper, name, value)
            paper.save()
        message = f"Imported from {PurePosixPath(bundle.source).name}"
        version = import_rubric_tree(paper, parsed, user, message)
    return ImportResult(paper, version, created, len(parsed.nodes), parsed.warnings)


# ---------------------------------------------------------------------------------------------
# Edits


class StalePaper(Conflict):
    """The paper changed since the client read it: a 409 carrying the paper as it is now."""

    def __init__(self, current: Paper) -> None:
        super().__init__("This paper was changed by someone else since you read it.", current,
                         headers={"ETag": current.etag})


def update_paper(paper: Paper, revision: int, changes: dict[str, Any], *, pdf: File | None = None) -> Paper:
    """Write only ``changes`` (model field -> value), and only if the paper is still at ``revision``.

    One conditional UPDATE, so two curators' edits never interleave: the second one, based on
    the same read, gets ``StalePaper`` with the current paper instead of silently undoing the
    first. ``pdf`` is stored first and removed again when the edit is refused.
    """
    if pdf is not None:
        field = Paper._meta.get_field("pdf")
        changes = {**changes, "pdf": field.storage.save(field.generate_filename(paper, pdf.name), pdf,
                                                        max_length=field.max_length)}
    with transaction.atomic():
        written = Paper.objects.filter(pk=paper.pk, revision=revision).update(
            **changes, revision=F("revision") + 1, updated_at=timezone.now())
        # Read in the same transaction: the row lock of the UPDATE keeps the next writer out until then.
        current = get_object_or_404(Paper, pk=paper.pk)
    if not written:
        if pdf is not None:
            Paper._meta.get_field("pdf").storage.delete(changes["pdf"])
        raise StalePaper(current)
    return current


# ---------------------------------------------------------------------------------------------
# Export


def rubric_json_bytes(tree: dict[str, Any]) -> bytes:
    # PaperBench's own files are json.dump(indent=4) with ASCII escapes and no final newline.
    return json.dumps(tree, indent=4).encode()


def export_files(paper: Paper, version: RubricVersion | None = None) -> dict[str, bytes]:
    """The PaperBench folder for ``paper``: file name -> bytes (draft tree unless ``version``)."""
    tree = version.tree if version is not None else export_draft(paper)
    config = {"id": paper.slug, "title": paper.title}
    files = {
        RUBRIC_FILE: rubric_json_bytes(tree),
        "blacklist.txt": ("\n".join(paper.blacklist) + "\n" if paper.blacklist else "none").encode(),
        "config.yaml": yaml.safe_dump(config, sort_keys=False, allow_unicode=True).encode(),
    }
    for attr, model_field in (("paper_md", "markdown"), ("addendum", "addendum"),
                              ("judge_addendum", "judge_addendum")):
        text = getattr(paper, model_field)
        if text:
            files[TEXT_FILES[attr]] = text.encode()
    return files


def export_zip(paper: Paper, version: RubricVersion | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in export_files(paper, version).items():
            archive.writestr(f"{paper.slug}/{name}", data)
    return buffer.getvalue()


def write_folder(paper: Paper, out_dir: Path, version: RubricVersion | None = None) -> Path:
    folder = Path(out_dir) / paper.slug
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in export_files(paper, version).items():
        (folder / name).write_bytes(data)
    return folder
