"""The deployment files in deploy/ say what the code does: every command is a real manage.py
command, Celery app or ASGI application, every queue exists and is consumed, every variable is
read by the code, and nginx passes WebSockets and keeps /metrics internal.

No container engine runs here (compose and Kubernetes need one), so the files are read as YAML and
checked against the code itself; the nginx config was also run for real (docs/deploy.md)."""

from __future__ import annotations

import re
import shlex
from functools import cache
from importlib import import_module
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands

from apps.jobs.queues import QUEUES, gpu_queues_for_worker

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# Variables read by libraries or the container, not by our code.
EXTERNAL_VARIABLES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "POSTGRES_PASSWORD", "NCCL_DEBUG",
                      "POD_NAME", "SANDBOX_HOSTS", "DOCKER_TLS_CERTDIR", "POSTGRES_DB", "POSTGRES_USER"}


@cache
def code_text() -> str:
    return "\n".join(p.read_text() for d in ("klong_site", "apps", "worker") for p in (ROOT / d).rglob("*.py"))


def check_command(words: list[str], env: dict[str, str]) -> set[str]:
    """Check one container command against the code; returns the Celery queues it consumes
    (a worker on the gpu queue also takes gpu-2 ... gpu-N with KLONG_WORKER_GPUS = N)."""
    if "manage.py" in words:
        assert words[words.index("manage.py") + 1] in get_commands(), words
        return set()
    if words[0] == "daphne":
        module, _, name = words[-1].partition(":")
        assert hasattr(import_module(module), name), words
        return set()
    assert words[:4] == ["celery", "-A", "klong_site.celery_app", "worker"], words
    queues = set(words[words.index("-Q") + 1].split(","))
    if "gpu" in queues:
        gpus = re.sub(r"\$\{\w+:-(\d+)\}", r"\1", str(env.get("KLONG_WORKER_GPUS", "1")))  # "${X:-8}" -> 8
        queues |= set(gpu_queues_for_worker(int(gpus)))
    assert queues <= set(QUEUES), f"unknown queue in {words}"
    assert int(words[words.index("-c") + 1]) >= 1
    return queues


def check_variables(names: set[str]) -> None:
    # Endpoint keys are read by their prefix (KLONG_ENDPOINT_KEY_PREFIX), not by name.
    unknown = {n for n in names - EXTERNAL_VARIABLES
               if f'"{n}"' not in code_text() and not n.startswith("KLONG_ENDPOINT_KEY_")}
    assert not unknown, f"variables no code reads: {sorted(unknown)}"


def test_compose_runs_every_part_with_real_commands_and_consumes_every_queue():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "web", "nginx", "worker-cpu", "worker-gpu", "worker-judge"} <= set(services)
    consumed: dict[str, set[str]] = {}
    variables: set[str] = set()
    for name, service in services.items():
        if service.get("build"):
            # Built from the repository root (compose paths are relative to deploy/).
            assert (DEPLOY / service["build"]["context"]).resolve() == ROOT
            assert (ROOT / service["build"]["dockerfile"]).is_file()
            consumed[name] = check_command(service["command"], service.get("environment", {}))
            variables |= set(service.get("environment", {}))
    # One 8-GPU machine: jobs asking for 1 to 8 GPUs, and only those, have a worker.
    assert consumed["worker-gpu"] == {"gpu", *(f"gpu-{k}" for k in range(2, 9))}
    assert consumed["worker-judge"] == {"judge"}
    assert set().union(*consumed.values()) == {"cpu", "judge", *consumed["worker-gpu"]}
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert services["web"]["environment"]["REDIS_URL"] == services["worker-gpu"]["environment"]["REDIS_URL"]
    env_example = (DEPLOY / "env.example").read_text()
    variables |= set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", env_example, re.MULTILINE))
    check_variables(variables)


def test_kubernetes_workers_use_real_queues_gpus_and_one_docker_host_each():
    documents = [d for f in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
    deployments = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment"}
    consumed, variables = {}, set()
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        line = " ".join(container.get("command", []) + container.get("args", []))
        words = shlex.split(line[line.index("celery"):]) if "sh -c" in line else container["args"]
        env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
        consumed[name] = check_command([w for w in words if w], env)
        variables |= set(env)
    configmap = next(d for d in documents if d["kind"] == "ConfigMap")
    check_variables(variables | set(configmap["data"]))
    gpu = deployments["klong-worker-gpu"]["spec"]["template"]["spec"]["containers"][0]
    cards = gpu["resources"]["limits"]["nvidia.com/gpu"]
    # The pod takes the jobs its GPUs can hold: as many queues as cards, no more.
    assert consumed["klong-worker-gpu"] == set(gpu_queues_for_worker(cards)) and cards >= 1
    assert set().union(*consumed.values()) == {"cpu", "judge", *consumed["klong-worker-gpu"]}
    # A container lives on one engine: the sandbox hosts are addressed one by one, never balanced.
    service = next(d for d in documents if d["kind"] == "Service" and d["metadata"]["name"] == "klong-sandbox")
    assert service["spec"]["clusterIP"] == "None"


def test_the_app_image_copies_what_exists_and_the_sandbox_image_matches_the_sandbox_code():
    from worker.sandbox import SUBMISSION_DIR

    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (\S+)", dockerfile, re.MULTILINE):
        assert (ROOT / source).exists(), source
    pins = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith("torch==")]
    assert len(pins) == 1  # the CPU-index install in the Dockerfile greps this line
    check_command(shlex.split(re.search(r'^CMD \[(.*)\]', dockerfile, re.MULTILINE).group(1).replace(",", " ")), {})
    sandbox = (DEPLOY / "sandbox.Dockerfile").read_text()
    assert f"WORKDIR {SUBMISSION_DIR}" in sandbox and re.search(r"^USER (?!root)", sandbox, re.MULTILINE)


@pytest.mark.parametrize("rule", [
    # WebSockets: the upgrade handshake passed on, no idle timeout on live job pages.
    r"location /ws/ \{[^}]*proxy_set_header Upgrade \$http_upgrade;[^}]*proxy_set_header Connection \$connection_upgrade;",
    r"location /ws/ \{[^}]*proxy_read_timeout 1d;",
    # /metrics stays on the private network.
    r"location = /metrics \{\s*return 404;",
    # daphne --proxy-headers trusts the first address: nginx must overwrite, never append.
    r"proxy_set_header X-Forwarded-For \$remote_addr;",
])
def test_nginx_passes_websockets_and_keeps_metrics_internal(rule):
    assert re.search(rule, (DEPLOY / "nginx.conf").read_text())


def test_nginx_accepts_the_largest_upload_the_app_accepts(settings):
    size = re.search(r"client_max_body_size (\d+)m;", (DEPLOY / "nginx.conf").read_text())
    assert int(size.group(1)) * 1024 * 1024 >= settings.KLONG_MAX_UPLOAD_BYTES
    assert "$proxy_add_x_forwarded_for" not in (DEPLOY / "nginx.conf").read_text()
