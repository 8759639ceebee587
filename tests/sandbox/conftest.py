"""Real sandboxes for the tests: bubblewrap on this machine, and containers through podman's
Docker API (started here on a private unix socket when no Docker API answers already)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from worker.sandbox import SandboxSpec, docker_available, open_sandbox

BACKENDS = ["bwrap", "docker"]


def _start_podman_service() -> tuple[subprocess.Popen, str]:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: the docker backend is tested against podman's Docker API "
                    "(apt-get install podman runc; .ci/run does it)")
    folder = tempfile.mkdtemp(prefix="klong-podman-")
    socket = f"unix://{folder}/podman.sock"
    # cwd: conmon leaves an "oom" file in the service's working folder when a container hits its
    # memory limit; not in the checkout.
    proc = subprocess.Popen(["podman", "system", "service", "--time=0", socket], cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if docker_available(socket):
            return proc, socket
        time.sleep(0.2)
    proc.kill()
    pytest.fail("podman system service did not answer within 30 s")


@pytest.fixture(scope="session")
def docker_host():
    """A Docker API: $DOCKER_HOST if it answers, else a podman service started for the session."""
    existing = os.environ.get("DOCKER_HOST", "")
    if existing and docker_available(existing):
        yield existing
        return
    proc, socket = _start_podman_service()
    try:
        yield socket
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def docker_env(docker_host, monkeypatch) -> str:
    """DOCKER_HOST set for this test only: the worker thread and the cleanup read it from the
    environment (set for the whole session, it would turn other tests' "auto" sandboxes into
    containers)."""
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    return docker_host


@pytest.fixture(scope="session")
def sandbox_image(docker_host) -> str:
    """The default sandbox image, built from this host's tools if the engine lacks it."""
    from worker.sandbox import docker_client
    from worker.sandbox.image import DEFAULT_IMAGE, ensure_image

    client = docker_client(docker_host)
    try:
        return ensure_image(client, DEFAULT_IMAGE)
    finally:
        client.close()


@pytest.fixture
def make_spec(request):
    """``make_spec(backend, **fields)``: a spec for that backend (docker gets the engine and image)."""

    def make(backend: str, **fields) -> SandboxSpec:
        if backend == "docker":
            fields.setdefault("image", request.getfixturevalue("sandbox_image"))
            fields.setdefault("docker_host", request.getfixturevalue("docker_host"))
        fields.setdefault("wall_clock_s", 120)
        fields.setdefault("memory_mb", 512)
        return SandboxSpec(backend=backend, **fields)

    return make


@pytest.fixture
def open_box(make_spec):
    """``open_box(backend, **fields)``: an open sandbox, closed after the test."""
    boxes = []

    def make(backend: str, **fields):
        box = open_sandbox(make_spec(backend, **fields), slots=None)
        boxes.append(box)
        return box

    yield make
    for box in boxes:
        box.close()


def containers(docker_host: str, job_id: int) -> list:
    """The sandbox containers labelled with ``job_id`` on that engine, stopped ones too."""
    from worker.sandbox import docker_client

    client = docker_client(docker_host)
    try:
        return client.containers.list(all=True, filters={"label": f"klong.job={job_id}"})
    finally:
        client.close()


def host_processes_with(marker: str) -> list[str]:
    """Command lines of this machine's processes containing ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and "pytest" not in cmdline:
            found.append(cmdline)
    return found


@pytest.fixture
def stub():
    """The loopback OpenAI-compatible server (the one stand-in for remote model APIs)."""
    from tests.support.openai_stub import OpenAIStub

    with OpenAIStub() as server:
        yield server


class Script:
    """A stub responder answering with scripted assistant messages in order, then ``then``."""

    def __init__(self, *replies, then=None) -> None:
        self.replies = list(replies)
        self.then = then
        self.bodies: list[dict] = []

    def __call__(self, body: dict):
        self.bodies.append(body)
        if self.replies:
            reply = self.replies.pop(0)
            return reply(body) if callable(reply) else reply
        return self.then(body) if callable(self.then) else self.then
