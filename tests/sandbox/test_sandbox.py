"""Both sandbox backends, for real: bubblewrap here, containers through podman's Docker API."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from tests.sandbox.conftest import BACKENDS, containers, host_processes_with
from worker.sandbox import SandboxError, SandboxSpec, open_sandbox


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def shared(backend, request, tmp_path_factory):
    """One sandbox per backend for the tests that do not need a fresh one (a container start
    costs a second or two): 256 MB of memory, a read-only paper folder."""
    paper = tmp_path_factory.mktemp("paper")
    paper.chmod(0o755)  # as the worker writes it (tmp_path's are private): the agent's user reads it
    (paper / "paper.md").write_text("# The paper\n")
    fields = {"memory_mb": 256, "wall_clock_s": 300, "mounts_ro": {str(paper): "/home/paper"}}
    if backend == "docker":
        fields.update(image=request.getfixturevalue("sandbox_image"), docker_host=request.getfixturevalue("docker_host"))
    box = open_sandbox(SandboxSpec(backend=backend, **fields), slots=None)
    box.paper_folder = paper
    yield box
    box.close()


def test_commands_run_in_the_submission_folder_with_a_clean_environment(shared, monkeypatch):
    monkeypatch.setenv("KLONG_PROBE_SECRET", "s3cret")
    box = shared
    result = box.exec("pwd; echo out; echo err >&2; env; exit 3")
    assert result.exit_code == 3 and not result.timed_out
    assert result.stdout.splitlines()[:2] == ["/home/submission", "out"]
    assert result.stderr.strip() == "err"
    assert "s3cret" not in result.stdout  # the worker's variables (API keys) never reach the agent
    box.write_file("/home/submission/data/raw.bin", bytes(range(256)))
    assert box.read_file("/home/submission/data/raw.bin") == bytes(range(256))
    assert box.read_file("/home/submission/data/raw.bin", max_bytes=10) == bytes(range(10))
    with pytest.raises(SandboxError):
        box.read_file("/home/submission/missing.txt")


def test_the_network_is_unreachable(shared):
    box = shared
    probe = ("python3 -c \"import socket; s = socket.socket(); s.settimeout(3); "
             "s.connect(('1.1.1.1', 53)); print('connected')\"")
    result = box.exec(probe, timeout_s=20)
    assert result.exit_code != 0 and "connected" not in result.stdout
    assert "unreachable" in result.stderr.lower() or "network" in result.stderr.lower()
    links = box.exec("cat /proc/net/dev").stdout
    assert [line.split(":")[0].strip() for line in links.splitlines()[2:]] == ["lo"]


def test_a_command_past_its_timeout_is_killed_with_its_children(shared):
    box = shared
    marker = f"{300 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 997}"
    started = time.monotonic()
    result = box.exec(f"sleep {marker} & sleep {marker}; echo never", timeout_s=1)
    assert result.timed_out and "never" not in result.stdout
    assert time.monotonic() - started < 8
    deadline = time.monotonic() + 5
    while host_processes_with(f"sleep {marker}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert host_processes_with(f"sleep {marker}") == []
    assert box.exec("echo still usable").stdout.strip() == "still usable"


def test_the_wall_clock_ends_and_removes_the_sandbox_and_closing_again_is_harmless(backend, open_box, request):
    job_id = 900_000 + uuid.uuid4().int % 99_999
    box = open_box(backend, wall_clock_s=2.5 if backend == "docker" else 1.5, job_id=job_id)
    result = box.exec("sleep 30", timeout_s=60)
    assert result.timed_out and result.duration_s < 6
    if not box.closed:  # the command took the last second: the next call finds the clock run out
        box.exec("true")
    assert box.closed
    with pytest.raises(SandboxError):
        box.exec("true")
    box.close()
    box.close()
    if backend == "docker":
        assert containers(request.getfixturevalue("docker_host"), job_id) == []
    else:
        assert not box.root.exists()


def test_snapshots_record_restore_and_export_any_state(shared, tmp_path):
    box = shared
    assert box.base_commit
    box.snapshot("settle")
    assert box.snapshot("nothing new") is None
    box.write_file("/home/submission/snap/main.py", b"print(1)\n")
    first = box.snapshot("first")
    assert first and box.snapshot("unchanged") is None
    box.exec("cd snap && echo 'print(2)' > main.py && mkdir -p out && echo 0.9 > out/score.txt")
    second = box.snapshot("second")
    assert second not in (None, first)

    box.restore(first)
    assert box.exec("cat snap/main.py; ls snap; ls -a").stdout.split()[:2] == ["print(1)", "main.py"]
    exported = box.export_submission(tmp_path / "second", second)
    assert (exported / "snap" / "main.py").read_text() == "print(2)\n"
    assert (exported / "snap" / "out" / "score.txt").read_text() == "0.9\n"
    assert ".git" not in box.exec("ls -a /home/submission").stdout  # the history lives outside
    # The state before the agent wrote anything exports as an empty folder (judged as empty).
    assert list(box.export_submission(tmp_path / "empty", box.base_commit).iterdir()) == []
    with pytest.raises(SandboxError):
        box.restore("deadbeef" * 5)
    with pytest.raises(SandboxError):
        box.export_submission(tmp_path / "bad", "HEAD; rm -rf /")


def test_a_rollouts_states_export_in_one_call_each_into_its_own_folder(shared, tmp_path):
    box = shared
    box.exec("rm -rf ./* && echo one > a.txt")
    first = box.snapshot("first state")
    # the second state links into where the first is exported: unpacked together, it would reach it
    box.exec("echo two > a.txt && ln -s ../first/a.txt peek && mkdir -p deep && echo 3 > deep/b.txt")
    second = box.snapshot("second state")
    dest = {first: tmp_path / "first", second: tmp_path / "second", box.base_commit: tmp_path / "empty"}
    box.export_submissions(dest)
    assert (dest[first] / "a.txt").read_text() == "one\n" and sorted(os.listdir(dest[first])) == ["a.txt"]
    assert (dest[second] / "a.txt").read_text() == "two\n" and (dest[second] / "deep" / "b.txt").read_text() == "3\n"
    assert not (dest[second] / "peek").is_symlink()  # out of its own folder: left out
    assert os.listdir(dest[box.base_commit]) == []
    with pytest.raises(SandboxError, match="archiving"):
        box.export_submissions({"0" * 40: tmp_path / "unknown"})
    with pytest.raises(SandboxError, match="not a commit id"):
        box.export_submissions({"HEAD~1 --output=/tmp/x": tmp_path / "bad"})


def test_an_exported_submission_never_follows_links_out_of_it(shared, tmp_path):
    box = shared
    box.exec("echo ok > kept.txt && ln -sf /etc/passwd leak && ln -sf kept.txt alias")
    folder = box.export_submission(tmp_path / "export")
    assert (folder / "kept.txt").read_text() == "ok\n"
    assert not (folder / "leak").exists() and not (folder / "leak").is_symlink()
    assert os.readlink(folder / "alias") == "kept.txt"


def test_memory_beyond_the_limit_is_refused(shared):
    box = shared
    small = box.exec("python3 -c \"x = bytearray(32 * 1024 * 1024); print('fits')\"", timeout_s=60)
    assert small.stdout.strip() == "fits"
    big = box.exec("python3 -c \"x = bytearray(1024 * 1024 * 1024); print('fits')\"", timeout_s=60)
    assert big.exit_code != 0 and "fits" not in big.stdout


def test_paper_mounts_are_read_only_and_the_host_is_untouched(shared):
    box, paper = shared, shared.paper_folder
    assert box.read_file("/home/paper/paper.md") == b"# The paper\n"
    assert box.exec("echo changed > /home/paper/paper.md").exit_code != 0
    assert box.exec("touch /home/paper/new").exit_code != 0
    box.exec("echo x > /etc/klong-probe")  # the container's own /etc, or refused: never the host's
    with pytest.raises(SandboxError):
        box.write_file("/home/paper/paper.md", b"overwritten")
    assert (paper / "paper.md").read_text() == "# The paper\n" and not (paper / "new").exists()
    assert not os.path.exists("/etc/klong-probe")


def test_a_spec_with_relative_or_escaping_paths_is_refused(backend):
    with pytest.raises(ValueError):
        SandboxSpec(backend=backend, submission_dir="submission")
    with pytest.raises(ValueError):
        SandboxSpec(backend=backend, mounts_ro={"/tmp": "/home/../etc"})


def test_a_sandbox_that_asks_for_the_network_gets_an_interface(backend, open_box):
    box = open_box(backend, network=True)
    links = box.exec("cat /proc/net/dev").stdout
    assert [line.split(":")[0].strip() for line in links.splitlines()[2:]] != ["lo"]


def test_docker_requests_limits_gpus_and_labels_for_its_job():
    from worker.sandbox.docker_backend import container_kwargs

    spec = SandboxSpec(backend="docker", cpus=1.5, memory_mb=3000, gpus=2, job_id=42, wall_clock_s=600)
    kwargs = container_kwargs(spec, "img")
    assert (kwargs["nano_cpus"], kwargs["mem_limit"], kwargs["memswap_limit"]) == (1_500_000_000, "3000m", "3000m")
    (request,) = kwargs["device_requests"]
    assert (request.count, request.capabilities) == (2, [["gpu"]])
    assert kwargs["network_mode"] == "none" and kwargs["command"] == ["sleep", "600"]
    assert kwargs["labels"]["klong.job"] == "42" and kwargs["labels"]["klong.sandbox"] == "1"
    assert "device_requests" not in container_kwargs(SandboxSpec(backend="docker"), "img")


def test_read_only_folders_go_to_a_remote_docker_host_as_copies(open_box, docker_host, tmp_path):
    from worker.sandbox import docker_client
    from worker.sandbox.docker_backend import copies_mounts

    # A tcp:// or ssh:// engine cannot see this machine's paths: copies are the default there.
    assert copies_mounts(SandboxSpec(backend="docker", docker_host="tcp://gpu-node-7:2375"))
    assert not copies_mounts(SandboxSpec(backend="docker", docker_host="unix:///run/docker.sock"))
    paper = tmp_path / "paper"
    (paper / "figures").mkdir(parents=True)
    (paper / "paper.md").write_text("# The paper\n")
    (paper / "figures" / "f1.txt").write_text("figure\n")
    box = open_box("docker", mounts_ro={str(paper): "/home/paper"}, copy_mounts=True, job_id=987654)
    assert box.read_file("/home/paper/figures/f1.txt") == b"figure\n"
    assert box.exec("cat /home/paper/paper.md").stdout == "# The paper\n"  # the agent's user can read it
    assert box.exec("echo changed > /home/paper/paper.md").exit_code != 0
    client = docker_client(docker_host)
    try:
        mounts = client.api.inspect_container(box.id)["Mounts"]
        assert [(m["Type"], m["Destination"], m["RW"]) for m in mounts if m["Destination"] == "/home/paper"] == [
            ("volume", "/home/paper", False)]
        assert not any(m.get("Source") == str(paper) for m in mounts)  # nothing of this machine's disk
        box.close()
        # Closing removes the copies with the container.
        assert client.volumes.list(filters={"label": "klong.job=987654"}) == []
    finally:
        client.close()
    assert (paper / "paper.md").read_text() == "# The paper\n"


def test_bubblewrap_commands_have_no_capabilities_and_see_no_host_secrets(open_box, tmp_path):
    secret = tmp_path / "secret.txt"  # under /tmp, like podman's socket: hidden
    secret.write_text("s3cret")
    box = open_box("bwrap")
    status = box.exec("grep CapEff /proc/self/status").stdout
    assert status.split()[-1] == "0000000000000000"
    assert box.exec("cat /etc/shadow").stdout == ""
    assert box.exec(f"cat {secret}").exit_code != 0
    assert box.exec("ls /run").stdout.strip() == ""  # PostgreSQL's socket lives there on the host
    assert box.exec("mknod /tmp/disk b 8 0").exit_code != 0


def test_files_and_folders_copy_in_and_out(shared, tmp_path):
    data = tmp_path / "dataset"
    (data / "split").mkdir(parents=True)
    (data / "split" / "train.csv").write_text("x,y\n1,2\n")
    shared.copy_in(data, "/home/submission/copied/dataset")
    assert shared.exec("cat copied/dataset/split/train.csv").stdout == "x,y\n1,2\n"
    shared.exec("cd copied/dataset && echo 0.5 > result.txt && ln -sf /etc/hostname host")
    out = shared.copy_out("copied/dataset", tmp_path / "out")
    assert (out / "result.txt").read_text() == "0.5\n" and (out / "split" / "train.csv").exists()
    assert not (out / "host").exists()  # a link out of the folder is left out
    with pytest.raises(SandboxError):
        shared.copy_out("copied/dataset", tmp_path / "small", max_bytes=100)


def test_files_over_the_snapshot_limit_stay_out_of_snapshots(backend, open_box, tmp_path):
    box = open_box(backend, snapshot_max_file_mb=1)
    box.exec("mkdir -p ckpt && head -c 1500000 /dev/zero > 'ckpt/model weights.bin' && echo 1 > train.py")
    commit = box.snapshot("with a checkpoint")
    exported = box.export_submission(tmp_path / "export", commit)
    assert sorted(p.name for p in exported.rglob("*")) == ["train.py"]
    assert box.exec("ls ckpt").stdout.strip() == "model weights.bin"  # still there for the agent


def test_missing_engines_and_images_fail_with_the_reason_and_auto_falls_back_to_bubblewrap(docker_host, tmp_path,
                                                                                          sandbox_image):
    nowhere = f"unix://{tmp_path}/no-engine.sock"
    with pytest.raises(SandboxError, match="no Docker API answers"):
        open_sandbox(SandboxSpec(backend="docker", docker_host=nowhere), slots=None)
    with pytest.raises(SandboxError, match="build_sandbox_image"):
        open_sandbox(SandboxSpec(backend="docker", docker_host=docker_host, image="localhost/missing:x"), slots=None)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)  # the agent's unprivileged user could not open the paper
    with pytest.raises(SandboxError, match="not readable by the sandbox's user"):
        open_sandbox(SandboxSpec(backend="docker", docker_host=docker_host, image=sandbox_image,
                                 mounts_ro={str(private): "/home/paper"}), slots=None)
    with open_sandbox(SandboxSpec(backend="auto", docker_host=nowhere), slots=None) as box:
        assert box.backend == "bwrap"


def test_an_image_with_an_unprivileged_user_keeps_its_history_out_of_the_agents_reach(docker_host, sandbox_image):
    from worker.sandbox import docker_client

    client = docker_client(docker_host)
    try:
        draft = client.containers.create(sandbox_image, ["true"])
        image = draft.commit(repository="localhost/klong-sandbox-test", tag="unprivileged",
                             changes=["USER 10002", "ENV PATH=/opt/venv/bin:/usr/bin:/bin"])
        draft.remove()
    finally:
        client.close()
    with open_sandbox(SandboxSpec(backend="docker", image=image.id, docker_host=docker_host), slots=None) as box:
        assert box.exec("id -u; echo $PATH").stdout.split() == ["10002", "/opt/venv/bin:/usr/bin:/bin"]
        # podman hands the user a container is created with its added capabilities: not the agent's
        assert box.exec("grep -E '^Cap(Eff|Amb):' /proc/self/status").stdout.split()[1::2] == ["0" * 16] * 2
        box.write_file("train.py", b"print(1)\n")
        first = box.snapshot("first")
        assert box.exec("stat -c %u train.py").stdout.strip() == "10002"
        assert box.exec("ls /var/lib/klong-snapshots").exit_code != 0  # the history is root's alone
        box.exec("echo broken > train.py")
        box.restore(first)
        assert box.exec("echo 'print(2)' >> train.py && cat train.py").stdout == "print(1)\nprint(2)\n"


def test_docker_commands_run_unprivileged_within_limits_and_leave_no_engine_process(open_box, tmp_path):
    from worker.sandbox import docker_client, sandbox_uid
    from worker.sandbox.cleanup import local_conmons

    box = open_box("docker", max_processes=24)
    assert box.exec("id -u").stdout.strip() == str(sandbox_uid())
    status = dict(line.split(":\t") for line in box.exec("cat /proc/self/status").stdout.splitlines())
    assert (status["CapEff"], status["CapPrm"], status["CapAmb"]) == ("0" * 16,) * 3
    assert status["NoNewPrivs"] == "1"
    # Not even within reach: the bounding set keeps only CHOWN and DAC_OVERRIDE, for the snapshot scripts.
    assert status["CapBnd"] == "0000000000000003"
    # Forks until the engine refuses: the container's processes (its init, sleep, this shell) count too.
    bomb = ("import os, signal, time\nkids = []\ntry:\n    while len(kids) < 200:\n        pid = os.fork()\n"
            "        if pid == 0:\n            time.sleep(60)\n            os._exit(0)\n        kids.append(pid)\n"
            "except OSError:\n    pass\nprint(len(kids))\nfor pid in kids:\n    os.kill(pid, signal.SIGKILL)\n")
    box.write_file("/tmp/bomb.py", bomb.encode())
    forked = int(box.exec("python3 /tmp/bomb.py", timeout_s=30).stdout)
    assert 5 < forked < 24
    # The agent's work goes on: private files and folders are snapshotted, restored and exported.
    box.exec("mkdir -m 700 secret && echo 1 > secret/w.txt && chmod 600 secret/w.txt && echo 'print(1)' > train.py"
             " && chmod 000 train.py")
    first = box.snapshot("private files")
    box.exec("rm -rf secret; chmod 644 train.py; echo 'print(2)' > train.py")
    box.restore(first)
    assert box.exec("cat secret/w.txt && echo 3 >> secret/w.txt && stat -c %u secret/w.txt").stdout.split() == [
        "1", str(sandbox_uid())]
    exported = box.export_submission(tmp_path / "first", first)
    assert (exported / "secret" / "w.txt").read_text() == "1\n" and (exported / "train.py").exists()
    # Files put in by the worker go only where the agent itself may write.
    box.exec("ln -s /var/lib/klong-snapshots history")
    for target in ("/var/lib/klong-snapshots/config", "history/config", "/etc/passwd"):
        with pytest.raises(SandboxError, match="cannot write"):
            box.write_file(target, b"[core]\n\tfsmonitor = touch /tmp/pwned\n")
    box.write_file("notes.md", b"ok\n")
    assert box.snapshot("after the attempts") and box.exec("ls /tmp/pwned").exit_code != 0

    # podman keeps each finished exec's conmon pair for 5 minutes (exit_command_delay): two per command.
    # The ones just ended may still be dying for a moment; a leak would stay for those 5 minutes.
    assert settled(lambda: [c for c in local_conmons() if c.container == box.id and c.of_exec]) == []
    # A command whose exit code nobody reads (the sandbox closed under it: a cancel, the wall clock).
    client = docker_client(box.spec.docker_host)
    try:
        client.api.exec_start(client.api.exec_create(box.id, ["sleep", "30"])["Id"], detach=True)
    finally:
        client.close()
    box.close()
    # the container's own conmon ends with it
    assert settled(lambda: [c for c in local_conmons() if c.container == box.id], within_s=5) == []


def settled(look, within_s: float = 2.0) -> list:
    """What ``look()`` finds once it finds nothing, or after ``within_s`` (processes being killed
    stay visible for a moment)."""
    deadline = time.monotonic() + within_s
    while (found := look()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def test_the_sweep_ends_engine_processes_of_removed_containers_only(open_box, docker_host):
    from worker.sandbox.cleanup import local_conmons, sweep_engine_leftovers

    box = open_box("docker")
    box._reaps_conmons = False  # as a worker that could not end them (another user, killed mid-command)
    box.exec("true")
    left = {c.pid for c in local_conmons() if c.container == box.id and c.of_exec}
    assert len(left) == 2
    assert left.isdisjoint(c.pid for c in sweep_engine_leftovers(docker_host))  # its container is still there
    box.close()
    assert left <= {c.pid for c in sweep_engine_leftovers(docker_host)}
    assert settled(lambda: [c for c in local_conmons() if c.pid in left]) == []
