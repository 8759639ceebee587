# The agent sandbox image: where an agent's commands run while it reproduces a paper.
#
#   docker build -f deploy/sandbox.Dockerfile -t klong-sandbox:latest deploy/
#   # on a remote sandbox host: DOCKER_HOST=tcp://sandbox-1:2376 docker build ... (or push to your registry)
#
# Workers open sandboxes from it (KLONG_SANDBOX_IMAGE=klong-sandbox:latest, worker/sandbox/): no
# network unless a job asks, CPU/memory/GPU limits per container, the submission folder at
# /home/submission (snapshotted by the worker, outside the agent's reach). Without a registry,
# worker/sandbox/image.py builds an equivalent image from the host's own programs.
#
# For GPU sandboxes use a CUDA base with the same packages, e.g.
#   --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG BASE=debian:bookworm-slim
FROM ${BASE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LANG=C.UTF-8

# What a PaperBench-style reproduction reaches for: Python with venv and pip, a compiler for
# native extensions, git (the worker snapshots the submission with it), and the usual shell tools.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 python3-venv python3-pip python3-dev build-essential git curl ca-certificates \
      procps less file unzip xz-utils jq ripgrep \
 && rm -rf /var/lib/apt/lists/*

# Unprivileged: the agent never runs as root inside its container.
RUN useradd --uid 10002 --create-home --shell /bin/bash agent \
 && mkdir -p /home/submission && chown agent:agent /home/submission
USER agent
WORKDIR /home/submission
# A venv the agent may install into (when the job grants network), kept out of the submission.
RUN python3 -m venv /home/agent/venv
ENV PATH=/home/agent/venv/bin:$PATH

# Kept alive by the worker, which runs each command with `exec`; the wall-clock limit is the worker's.
CMD ["sleep", "infinity"]
