"""The one confinement policy (worker/sandbox/confine.py), attacked through both of its users: a
curator's rubric check (worker/judge/checks.py) and an agent's command in a bubblewrap sandbox.

Each attack is what a hostile check or agent tried on the running app (issue 16): capabilities,
root, remounting the host, reading the data folder and /etc/shadow, the host's unix sockets, the
network, fork bombs, memory, output floods and endless checks.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings

from tests.judging.helpers import make_submission
from worker.judge.checks import run_check
from worker.sandbox import SandboxSpec, open_sandbox

PROCESS_LIMIT = 24
MEMORY_MB = 256


@dataclass
class Confined:
    """Runs a shell command confined, as a check or as an agent's command: (exit code, output)."""

    kind: str
    run: Callable[[str], tuple[int | None, str]]


@pytest.fixture(scope="module", params=["check", "agent"])
def confined(request, tmp_path_factory):
    if request.param == "check":
        submission = make_submission(tmp_path_factory.mktemp("check") / "submission")
        patch = pytest.MonkeyPatch()
        patch.setattr(settings, "KLONG_CHECK_MAX_PROCESSES", PROCESS_LIMIT)
        patch.setattr(settings, "KLONG_CHECK_MEMORY_MB", MEMORY_MB)

        def check(command: str) -> tuple[int | None, str]:
            result = run_check(command, submission, timeout_s=30)
            assert not result.error, result.error
            return result.exit_code, result.output

        yield Confined("check", check)
        patch.undo()
        return
    spec = SandboxSpec(backend="bwrap", max_processes=PROCESS_LIMIT, memory_mb=MEMORY_MB, wall_clock_s=600)
    box = open_sandbox(spec, slots=None)

    def agent(command: str) -> tuple[int | None, str]:
        result = box.exec(command, timeout_s=30)
        return result.exit_code, result.stdout + result.stderr

    yield Confined("agent", agent)
    box.close()


def host_unix_sockets() -> list[str]:
    """Paths of the unix sockets listening on this machine (PostgreSQL's, Redis's, podman's...)."""
    paths = set()
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) == 8 and fields[7].startswith("/"):
            paths.add(fields[7])
    return sorted(paths)


def test_commands_have_no_capabilities_and_cannot_gain_any(confined):
    _, output = confined.run("grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/self/status")
    status = dict(line.split(":\t") for line in output.strip().splitlines())
    assert status == {"CapEff": "0000000000000000", "CapPrm": "0000000000000000", "CapBnd": "0000000000000000",
                      "NoNewPrivs": "1"}


def test_commands_run_as_an_unprivileged_user_in_their_own_user_namespace(confined):
    code, output = confined.run("id -u; cat /proc/self/uid_map; unshare --user true && echo nested")
    uid, *mapping = output.split("\n")
    assert uid != "0"
    assert " ".join(mapping).split()[:3] != ["0", "0", "4294967295"]  # not the host's identity map
    assert "nested" not in output  # no user namespace inside, for a second try at root


def test_the_host_cannot_be_remounted_or_written(confined):
    marker = f"/klong-probe-{uuid.uuid4().hex[:8]}"
    code, output = confined.run(f"mount -o remount,rw / ; umount /proc; touch {marker} /usr/{marker[1:]}; echo done")
    assert "done" in output  # every attempt failed, nothing stopped the script
    assert not os.path.exists(marker) and not os.path.exists(f"/usr/{marker[1:]}")
    code, _ = confined.run(f"test -e {marker}")
    assert code != 0


def test_the_checkout_and_the_data_media_and_static_folders_are_not_there(confined):
    checkout = Path(__file__).resolve().parents[2]
    folders = [checkout, settings.DATA_DIR, settings.MEDIA_ROOT, settings.STATIC_ROOT]
    probes = "; ".join(f"test -e '{folder}' && echo 'visible: {folder}'" for folder in folders)
    _, output = confined.run(f"{probes}; cat '{settings.DATA_DIR}/secret_key'; echo end")
    assert "visible" not in output and "end" in output


def test_secrets_of_the_system_stay_unreadable(confined):
    code, output = confined.run("cat /etc/shadow /etc/gshadow 2>&1; ls /root /home/* 2>&1 | head -n 3; echo end")
    assert "root:" not in output and "end" in output


def test_no_host_unix_socket_is_reachable(confined):
    sockets = host_unix_sockets()
    assert sockets, "this machine runs PostgreSQL and Redis: their sockets should be listed"
    probes = "; ".join(f"test -S '{path}' && echo 'reachable: {path}'" for path in sockets)
    _, output = confined.run(f"{probes}; echo end")
    assert "reachable" not in output


def test_there_is_no_network_not_even_the_hosts_loopback_services(confined):
    script = ("import socket\ns = socket.socket(); s.settimeout(2)\n"
              "try:\n    s.connect(('127.0.0.1', 5432)); print('connected')\nexcept OSError as e:\n    print('refused')")
    _, output = confined.run(f"python3 -c \"{script}\"; cat /proc/net/dev")
    assert "refused" in output and "connected" not in output
    links = [line.split(":")[0].strip() for line in output.splitlines() if ":" in line and "|" not in line]
    assert links == ["lo"]


def test_a_fork_bomb_stops_at_the_process_limit(confined):
    script = ("import os, time\nn = 0\ntry:\n    for _ in range(200):\n        if os.fork() == 0:\n"
              "            time.sleep(3); os._exit(0)\n        n += 1\nexcept OSError:\n    print('refused after', n)")
    _, output = confined.run(f"python3 -c \"{script}\"")
    assert "refused after" in output
    assert int(output.split("refused after")[1].split()[0]) < PROCESS_LIMIT


def test_memory_beyond_the_limit_is_refused(confined):
    _, small = confined.run("python3 -c \"x = bytearray(16 * 1024 * 1024); print('fits')\"")
    assert "fits" in small
    _, big = confined.run(f"python3 -c \"x = bytearray({2 * MEMORY_MB} * 1024 * 1024); print('fits')\"")
    assert "fits" not in big and "MemoryError" in big


def test_an_output_flood_is_cut_while_it_is_read(confined):
    code, output = confined.run("head -c 200000000 /dev/zero | tr '\\0' x; echo")
    assert len(output) <= 1_100_000


def test_a_check_cannot_run_longer_than_the_maximum_timeout(tmp_path, settings):
    settings.KLONG_CHECK_MAX_TIMEOUT_S = 2
    result = run_check("sleep 30", make_submission(tmp_path / "s"), timeout_s=10**6)
    assert not result.passed and result.output == "timed out after 2 s"


def test_a_check_writes_only_into_its_private_bounded_copy(tmp_path, settings):
    settings.KLONG_CHECK_TMP_MB = 8
    folder = make_submission(tmp_path / "s")
    result = run_check("echo changed > results.csv && cat results.csv && head -c 20000000 /dev/zero > big; "
                       "echo exit=$?", folder)
    assert result.output.splitlines()[:1] == ["changed"] and "exit=0" not in result.output
    assert (folder / "results.csv").read_text() == "model,accuracy\nsmall,0.91\n" and not (folder / "big").exists()
