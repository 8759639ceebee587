"""KLong Studio API client and command line, in one file that needs only ``requests``.

Training clusters copy this file next to their scripts (it imports nothing from the project) to
push trajectories and submissions and pull datasets and checkpoints::

    from klong_client import KlongClient
    studio = KlongClient("https://studio.example.org", token="...")   # or KLONG_URL / KLONG_TOKEN
    studio.push_trajectories("run-17.jsonl", paper="bam")
    job = studio.submit("bam", "gpt-judge", "submissions/run-17/")       # a folder or a .tar/.zip
    studio.wait(job["job"])
    studio.pull_dataset("sft.zip", paper="bam", l_max=65536)          # an export job: waits, downloads
    studio.pull_checkpoint(12, "models/ckpt-12", extract=True)

Command line (JSON on stdout; errors on stderr with exit status 1)::

    python -m apps.client --url URL --token KEY push-trajectories run.jsonl --paper bam
    python -m apps.client submit bam gpt-judge ./submission --wait
    python -m apps.client pull-dataset sft.zip --paper bam --param l_max=65536
    python -m apps.client checkpoints
    python -m apps.client pull-checkpoint 12 ./ckpt-12 --extract
    python -m apps.client launch selftest --config '{"steps": 5}' --wait
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

FINISHED = {"succeeded", "failed", "cancelled"}
CHUNK = 1 << 20


class KlongError(RuntimeError):
    """The API refused a request: ``status`` is the HTTP status, ``detail`` the server's answer."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class JobFailed(RuntimeError):
    """A job this client waited for did not succeed: ``job`` is the job as the API shows it."""

    def __init__(self, job: dict) -> None:
        super().__init__(f"job {job.get('id')} {job.get('state')}: {job.get('error') or job.get('message') or ''}")
        self.job = job


class KlongClient:
    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 120,
                 session: requests.Session | None = None) -> None:
        url = url or os.environ.get("KLONG_URL", "")
        token = token or os.environ.get("KLONG_TOKEN", "")
        if not url:
            raise ValueError("No server address: pass url= or set KLONG_URL (e.g. https://studio.example.org).")
        if not token:
            raise ValueError("No API token: pass token= or set KLONG_TOKEN (create one at /account/tokens/).")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    # --- plumbing -----------------------------------------------------------------------------
    def request(self, method: str, path: str, *, stream: bool = False, **kwargs: Any) -> requests.Response:
        url = path if path.startswith("http") else f"{self.url}/api/{path.lstrip('/')}"
        response = self.session.request(method, url, timeout=self.timeout, stream=stream, **kwargs)
        if response.status_code >= 400:
            try:
                detail = response.json()
            except ValueError:
                detail = response.text[:500]
            raise KlongError(response.status_code, detail)
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None).json()

    def post(self, path: str, payload: dict | None = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=payload, **kwargs).json()

    def pages(self, path: str, **params: Any) -> Iterator[dict]:
        """Every item of a paginated list, following ``next`` links."""
        page = self.get(path, **params)
        while True:
            yield from page["results"]
            if not page.get("next"):
                return
            page = self.request("GET", page["next"]).json()

    def _download(self, method: str, path: str, out: Path, **kwargs: Any) -> Path:
        """Stream to ``out`` through a temporary file: a failed download never leaves half a file."""
        out.parent.mkdir(parents=True, exist_ok=True)
        with (self.request(method, path, stream=True, **kwargs) as response,
              tempfile.NamedTemporaryFile(dir=out.parent, delete=False, suffix=".partial") as tmp):
            try:
                for chunk in response.iter_content(CHUNK):
                    tmp.write(chunk)
            except BaseException:
                tmp.close()
                os.unlink(tmp.name)
                raise
        os.replace(tmp.name, out)
        return out

    # --- push ---------------------------------------------------------------------------------
    def push_trajectories(self, path: str | Path, *, paper: str | None = None, skip_bad: bool = False) -> dict:
        """Upload a trajectory file (any supported format). Small files answer the new ids; large
        ones ``{"job": id}``, an import job to ``wait`` for."""
        data = {"skip_bad": "true" if skip_bad else "false", **({"paper": paper} if paper else {})}
        with open(path, "rb") as handle:
            return self.request("POST", "trajectories/import/", data=data,
                                files={"file": (Path(path).name, handle)}).json()

    def submit(self, paper: str, endpoint: str, submission: str | Path, *, rubric_version: int | None = None,
               code_only: bool = False) -> dict:
        """Judge a submission (a folder, tarred here, or a .tar/.tar.gz/.zip) against the paper's
        rubric with a model endpoint; answers ``{"job", "priority", "queue", "submission"}``."""
        source = Path(submission)
        data: dict[str, Any] = {"paper": paper, "endpoint": endpoint, "code_only": "true" if code_only else "false"}
        if rubric_version is not None:
            data["rubric_version"] = str(rubric_version)
        with contextlib.ExitStack() as stack:
            if source.is_dir():
                buffer = stack.enter_context(tempfile.TemporaryFile())
                with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
                    for item in sorted(source.rglob("*")):
                        if item.is_file():
                            archive.add(item, arcname=str(item.relative_to(source)))
                buffer.seek(0)
                name = f"{source.name or 'submission'}.tar.gz"
            else:
                buffer, name = stack.enter_context(open(source, "rb")), source.name
            return self.request("POST", "judge-runs/", data=data, files={"upload": (name, buffer)}).json()

    def launch(self, kind: str, config: dict, *, priority: int = 5, title: str = "") -> dict:
        return self.post("jobs/", {"kind": kind, "config": config, "priority": priority, "title": title})

    # --- pull ---------------------------------------------------------------------------------
    def pull_dataset(self, out: str | Path, *, ids: list[int] | None = None, timeout: float = 3600,
                     **params: Any) -> Path:
        """A training dataset zip (dataset.jsonl with input_ids and labels, manifest.json) of the
        given trajectory ids, or of the accepted ones matching the list filters (paper, source,
        model, q...); split options (l_max, overlap_turns...) as in the split view. The server
        renders it in a job: this queues the job, waits for it, then downloads its zip."""
        payload = {**params, **({"ids": ",".join(str(i) for i in ids)} if ids else {})}
        job = self.wait(self.post("trajectories/export-dataset/", payload)["job"], timeout=timeout)
        if job["state"] != "succeeded":
            raise JobFailed(job)
        zips = [a for a in self.get(f"jobs/{job['id']}/artifacts/") if a["kind"] == "dataset" and a["download"]]
        if not zips:
            raise JobFailed({**job, "error": "the job offers no dataset to download"})
        return self._download("GET", f"jobs/{job['id']}/artifacts/{zips[0]['id']}/download/", Path(out))

    def checkpoints(self) -> list[dict]:
        return list(self.pages("checkpoints/"))

    def pull_checkpoint(self, checkpoint: int, out: str | Path, *, extract: bool = False) -> Path:
        """The checkpoint as a zip at ``out``, or with ``extract`` unpacked into the folder ``out``."""
        out = Path(out)
        if not extract:
            return self._download("GET", f"checkpoints/{checkpoint}/download/", out)
        with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
            archive = self._download("GET", f"checkpoints/{checkpoint}/download/", Path(tmp) / "checkpoint.zip")
            staging = Path(tmp) / "files"
            with zipfile.ZipFile(archive) as zipped:
                for member in zipped.namelist():
                    # Never write outside the target folder, whatever the archive says.
                    target = (staging / member).resolve()
                    if staging.resolve() not in target.parents:
                        raise KlongError(200, f"unsafe path in checkpoint archive: {member}")
                zipped.extractall(staging)
            if out.exists():
                shutil.rmtree(out)
            shutil.move(str(staging), out)
        return out

    # --- jobs ---------------------------------------------------------------------------------
    def job(self, job_id: int) -> dict:
        return self.get(f"jobs/{job_id}/")

    def wait(self, job_id: int, *, timeout: float = 3600, poll_s: float = 2.0) -> dict:
        """Poll until the job has finished; returns it (check ``state``)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] in FINISHED:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout:.0f} s")
            time.sleep(poll_s)

    def workers(self) -> list[dict]:
        return self.get("workers/")


# --- command line ---------------------------------------------------------------------------------
def _params(pairs: list[str]) -> dict[str, Any]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--param wants KEY=VALUE, got {pair!r}")
        try:
            params[key] = json.loads(value)  # numbers and booleans as such
        except ValueError:
            params[key] = value
    return params


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="klong", description="KLong Studio API client (JSON on stdout).")
    parser.add_argument("--url", help="server address (default: $KLONG_URL)")
    parser.add_argument("--token", help="API token (default: $KLONG_TOKEN)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("push-trajectories", help="upload a trajectory file")
    p.add_argument("file")
    p.add_argument("--paper")
    p.add_argument("--skip-bad", action="store_true")
    p = sub.add_parser("submit", help="judge a submission folder or archive")
    p.add_argument("paper")
    p.add_argument("endpoint")
    p.add_argument("submission")
    p.add_argument("--rubric-version", type=int)
    p.add_argument("--code-only", action="store_true")
    p.add_argument("--wait", action="store_true", help="wait for the judge job and print it")
    p = sub.add_parser("pull-dataset", help="export a training dataset (a job on the server) and download its zip")
    p.add_argument("out")
    p.add_argument("--ids", help="comma-separated trajectory ids")
    p.add_argument("--paper")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="filter or split option")
    sub.add_parser("checkpoints", help="list checkpoints with their lineage")
    p = sub.add_parser("pull-checkpoint", help="download a checkpoint")
    p.add_argument("id", type=int)
    p.add_argument("out")
    p.add_argument("--extract", action="store_true", help="unpack into the folder OUT")
    p = sub.add_parser("launch", help="launch a job")
    p.add_argument("kind")
    p.add_argument("--config", default="{}", help="the job's config as JSON")
    p.add_argument("--priority", type=int, default=5)
    p.add_argument("--wait", action="store_true")
    p = sub.add_parser("job", help="show a job")
    p.add_argument("id", type=int)
    sub.add_parser("workers", help="list workers on every machine")
    return parser


def run(args: argparse.Namespace, client: KlongClient) -> Any:
    command = args.command
    if command == "push-trajectories":
        return client.push_trajectories(args.file, paper=args.paper, skip_bad=args.skip_bad)
    if command == "submit":
        answer = client.submit(args.paper, args.endpoint, args.submission, rubric_version=args.rubric_version,
                               code_only=args.code_only)
        return client.wait(answer["job"]) if args.wait else answer
    if command == "pull-dataset":
        params = _params(args.param)
        if args.paper:
            params["paper"] = args.paper
        ids = [int(i) for i in args.ids.split(",")] if args.ids else None
        return {"file": str(client.pull_dataset(args.out, ids=ids, **params))}
    if command == "checkpoints":
        return client.checkpoints()
    if command == "pull-checkpoint":
        return {"path": str(client.pull_checkpoint(args.id, args.out, extract=args.extract))}
    if command == "launch":
        try:
            config = json.loads(args.config)
        except ValueError as exc:
            raise SystemExit(f"--config is not JSON: {exc}") from None
        job = client.launch(args.kind, config, priority=args.priority)
        return client.wait(job["id"]) if args.wait else job
    if command == "job":
        return client.job(args.id)
    return client.workers()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run(args, KlongClient(args.url, args.token))
    except (KlongError, JobFailed, ValueError, OSError, TimeoutError, requests.RequestException) as exc:
        print(f"klong: {exc}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
