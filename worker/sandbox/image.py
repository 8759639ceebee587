"""Build a sandbox image locally, with no registry: a root filesystem made from this host's tools.

No image registry is reachable on the machines KLong runs on, so the default image is assembled
from the host's own programs: a shell and coreutils, grep/sed/find, git (the submission
snapshots need it) and python3 with its standard library, each with the shared libraries
``ldd`` lists. The tarball is imported through the Docker API (``POST /images/create`` with
``fromSrc``, what ``docker import`` / ``podman import`` do). About 70 MB; built once per tag.

A full distribution works the same way: ``debootstrap bookworm rootfs && tar -C rootfs -c . |
podman import - localhost/klong-sandbox:debian`` and pass that tag as the image.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterable
from pathlib import Path

import docker.errors

DEFAULT_IMAGE = "localhost/klong-sandbox:host"
PROGRAMS = (
    "sh", "bash", "dash", "env", "ls", "cat", "cp", "mv", "rm", "mkdir", "rmdir", "touch", "chmod", "chown", "ln",
    "echo", "printf", "head", "tail", "wc", "sort", "uniq", "cut", "tr", "tee", "dirname", "basename",
    "pwd", "id", "sleep", "timeout", "kill", "true", "false", "test", "date", "stat", "du", "df", "find",
    "xargs", "grep", "sed", "awk", "mawk", "diff", "tar", "gzip", "git", "python3", "realpath", "readlink",
    "nproc", "seq", "yes", "which", "whoami", "uname", "expr", "md5sum", "sha256sum", "file", "less",
    "ps", "pgrep", "pkill", "setsid", "nohup", "mktemp",
)
_LDD_PATH = re.compile(r"(/\S+)")


def _resolve(program: str) -> Path | None:
    found = shutil.which(program, path="/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
    return Path(found) if found else None


def _libraries(binary: Path) -> set[Path]:
    try:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {Path(m) for line in out.splitlines() for m in _LDD_PATH.findall(line) if os.path.exists(m)}


def rootfs_files(programs: Iterable[str] = PROGRAMS) -> list[Path]:
    """Every host path the image holds (programs, their libraries, python's stdlib)."""
    files: set[Path] = set()
    for program in programs:
        path = _resolve(program)
        if path is None:
            continue
        files.add(path)
        real = path.resolve()
        files.add(real)
        files |= _libraries(real)
    python = _resolve("python3")
    if python is not None:
        version = subprocess.run([str(python.resolve()), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        stdlib = Path(f"/usr/lib/python{version}")
        for path in stdlib.rglob("*"):
            if path.is_file() and "/test/" not in str(path) and "site-packages" not in path.parts:
                files.add(path)
        for so in (stdlib / "lib-dynload").glob("*.so"):
            files |= _libraries(so)
    for extra in ("/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/ssl/certs/ca-certificates.crt"):
        if os.path.exists(extra):
            files.add(Path(extra))
    # Each path through real folders (/lib64/x -> /usr/lib64/x on a merged /usr), plus the
    # target of every symlinked file, so the links inside the image resolve.
    real: set[Path] = set()
    for path in files:
        hop = Path(os.path.realpath(path.parent)) / path.name
        # every link of a chain (/usr/bin/awk -> /etc/alternatives/awk -> /usr/bin/mawk)
        for _ in range(10):
            real.add(hop)
            if not hop.is_symlink():
                break
            target = Path(os.readlink(hop))
            target = target if target.is_absolute() else hop.parent / target
            hop = Path(os.path.realpath(target.parent)) / target.name
    return sorted(real)


def build_rootfs_tar(programs: Iterable[str] = PROGRAMS) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("tmp", "home", "home/submission", "root", "proc", "dev", "sys", "var/tmp", "etc", "usr/bin"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if name in ("tmp", "var/tmp") else 0o755
            tar.addfile(info)
        # The merged-/usr links first (/bin -> usr/bin), as on the host.
        for link_dir in ("/bin", "/lib", "/lib64", "/sbin"):
            if os.path.islink(link_dir):
                info = tarfile.TarInfo(link_dir.lstrip("/"))
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(link_dir)
                tar.addfile(info)
        for path in rootfs_files(programs):
            # Symlinked files stay links (their targets are in the set too).
            tar.add(str(path), arcname=str(path).lstrip("/"), recursive=False)
    return buffer.getvalue()


# Bump when the way the root filesystem is assembled changes: images built before are rebuilt.
RECIPE_VERSION = 3
RECIPE_LABEL = "klong.recipe"


def recipe_hash(programs: Iterable[str] = PROGRAMS) -> str:
    """What the image is built from: the recipe version, the programs, this host's Python."""
    text = f"{RECIPE_VERSION}\n" + "\n".join(programs) + sys.version
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def ensure_image(client, tag: str = DEFAULT_IMAGE, *, rebuild: bool = False) -> str:
    """The image ``tag``, imported from a host root filesystem unless it is there from the same
    recipe (an image built by an older recipe is rebuilt)."""

    wanted = recipe_hash()
    if not rebuild:
        try:
            image = client.images.get(tag)
            if (image.labels or {}).get(RECIPE_LABEL) == wanted or not _ours(image):
                return tag  # up to date, or an image someone else put under this tag: used as it is
        except docker.errors.ImageNotFound:
            pass
    repository, _, version = tag.rpartition(":") if ":" in tag.split("/")[-1] else (tag, "", "latest")
    data = build_rootfs_tar()
    # The Docker API's import (docker import / podman import), with the recipe as a label.
    # podman's compat API ignores the tag it is given, so the image is tagged by id afterwards.
    answer = client.api.import_image_from_data(
        data, repository=repository, tag=version,
        changes=[f"LABEL {RECIPE_LABEL}={wanted}", "LABEL klong.sandbox.image=host"],
    )
    image_id = json.loads(answer.strip().splitlines()[-1])["status"]
    client.images.get(image_id).tag(repository, version)
    client.images.get(tag)
    return tag


def _ours(image) -> bool:
    """Built by this module: labelled so, or (before the label existed) a one-layer import with no
    labels and no command, which is what `import` of a root filesystem gives."""
    labels = image.labels or {}
    if labels:
        return labels.get("klong.sandbox.image") == "host"
    config = image.attrs.get("Config") or {}
    return not config.get("Cmd") and len((image.attrs.get("RootFS") or {}).get("Layers") or []) == 1
