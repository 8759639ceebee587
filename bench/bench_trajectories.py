"""Trajectory figures, each with a baseline measured in the same run.

- detail page first response on a synthetic 1,000-turn run (~4 MB of text): time and HTML size,
  against the list page;
- import of that run from our JSONL (streamed, batched), against the bare reader;
- token counting through the studio's counter against the tokenizers library's own batch
  encode on the same texts (a local BPE tokenizer trained here, no hub);
- in headless Chromium, cold, median of 5: the last turn on screen (deep link) at 1,000 and 3,000
  turns, the longest main-thread task until the page is idle, the JS heap and the bytes on the
  wire; each against the viewer before issue 21 in the same run (a second server with the old
  static setup, plotly.min.js loaded after the turns as the old minimap did).

Runs on the embedded defaults in a temporary data folder (SQLite); Chromium from Debian.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from _django import (  # noqa: E402  (sets up Django on the embedded defaults)
    daphne_server,
    embedded_redis_running,
    line,
    timed_ms,
)
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]



def synthetic_turns(n_turns: int, avg_chars: int = 4000) -> list[dict]:
    """System, task, then tool-call / tool-output pairs; ~avg_chars of text per turn."""
    import random

    rng = random.Random(0)
    words = ["the", "agent", "reads", "paper.md", "trains", "model", "loss", "epoch", "evaluates", "runs", "python", "error", "fix"]
    turns = [{"role": "system", "text": "You are a research agent."}, {"role": "user", "text": "Reproduce the paper."}]
    while len(turns) < n_turns:
        n = max(10, int(rng.expovariate(1 / avg_chars)))
        text = " ".join(rng.choice(words) for _ in range(n // 6))
        text = "\n".join(text[i:i + 100] for i in range(0, len(text), 100))
        if len(turns) % 2 == 0:
            turns.append({"role": "assistant", "text": text[:800],
                          "tool_calls": [{"id": f"c{len(turns)}", "name": "bash", "arguments": {"cmd": "python train.py"}}]})
        else:
            turns.append({"role": "tool", "text": text + text[: avg_chars], "tool_call_id": f"c{len(turns) - 1}"})
    return turns


def write_jsonl(path: Path, turns: list[dict]) -> Path:
    with path.open("w") as out:
        out.write(json.dumps({"klong_trajectory": 1, "task": path.stem, "model": "bench"}) + "\n")
        for turn in turns:
            out.write(json.dumps(turn) + "\n")
    return path


def main() -> None:
    call_command("migrate", verbosity=0)
    call_command("createadmin", password="bench-password-1", stdout=io.StringIO())
    folder = Path(tempfile.mkdtemp(prefix="klong-bench-traj-"))
    turns = synthetic_turns(1000)
    path = write_jsonl(folder / "run-1000.jsonl", turns)
    trajectory_id = bench_import(path)
    bench_pages(trajectory_id)
    bench_tokenizer(folder, [t["text"] for t in turns])
    path_3000 = write_jsonl(folder / "run-3000.jsonl", synthetic_turns(3000))
    from apps.trajectories.services import import_trajectories

    id_3000 = import_trajectories(path_3000).trajectories[0].id
    bench_browser({1000: trajectory_id, 3000: id_3000})


def bench_import(path: Path) -> int:
    from apps.trajectories.formats import read_trajectories
    from apps.trajectories.models import Trajectory
    from apps.trajectories.services import import_trajectories

    ids: list[int] = []

    def run_import() -> None:
        ids.append(import_trajectories(path).trajectories[0].id)

    import_ms = statistics.median(timed_ms(run_import, 3))
    read_ms = statistics.median(timed_ms(lambda: [len(t.turns) for t in read_trajectories(path)], 3))
    size_mb = path.stat().st_size / 1e6
    line("import_1000_turns_jsonl", import_ms, "ms", f"streamed; {size_mb:.1f} MB file")
    line("read_1000_turns_jsonl_baseline", read_ms, "ms", "baseline: the reader alone, no database")
    Trajectory.objects.filter(pk__in=ids[1:]).delete()
    return ids[0]


def bench_pages(trajectory_id: int) -> None:
    client = Client(SERVER_NAME="localhost")
    client.login(username="admin", password="bench-password-1")
    detail = f"/trajectories/{trajectory_id}/"
    client.get(detail)
    client.get("/trajectories/")
    detail_ms = statistics.median(timed_ms(lambda: client.get(detail), 20))
    list_ms = statistics.median(timed_ms(lambda: client.get("/trajectories/"), 20))
    html_kb = len(client.get(detail).content) / 1024
    chunk_ms = statistics.median(timed_ms(lambda: client.get(f"/api/trajectories/{trajectory_id}/turns/?start=900&end=1000"), 20))
    split_ms = statistics.median(timed_ms(lambda: client.get(f"/trajectories/{trajectory_id}/split/?l_max=32768",
                                                             HTTP_HX_REQUEST="true"), 5))
    line("detail_page_1000_turns_first_response", detail_ms, "ms", "< 300 ms")
    line("detail_page_1000_turns_html", html_kb, "KiB", "< 1024 KiB")
    line("list_page_baseline", list_ms, "ms", "baseline")
    line("turn_chunk_100_turns_api", chunk_ms, "ms", "what the viewer fetches per 100 turns")
    line("split_view_plan_1000_turns", split_ms, "ms", "htmx update 'within a moment'")


def bench_tokenizer(folder: Path, texts: list[str]) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from apps.trajectories.tokens import TokenizerCounter

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts[:200], trainers.BpeTrainer(vocab_size=4000, special_tokens=["<|endoftext|>"]))
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(folder / "tok")
    counter = TokenizerCounter(folder / "tok")
    raw = Tokenizer.from_file(str(folder / "tok" / "tokenizer.json"))
    chars = sum(len(t) for t in texts)
    counter.count(texts)  # warm both (thread pool, caches) before timing, then alternate
    raw.encode_batch(texts, add_special_tokens=False)
    ours_samples, library_samples = [], []
    for _ in range(7):
        ours_samples += timed_ms(lambda: counter.count(texts), 1)
        library_samples += timed_ms(lambda: raw.encode_batch(texts, add_special_tokens=False), 1)
    ours, library = statistics.median(ours_samples), statistics.median(library_samples)
    line("token_count_throughput", chars / ours / 1000, "Mchar/s", ">= 80% of the library's batch encode")
    line("tokenizers_encode_batch_baseline", chars / library / 1000, "Mchar/s", "baseline")
    print(f"token_count_vs_library: {100 * library / ours:.0f} %", flush=True)


# Registered before any page script runs: every main-thread task over 50 ms, and when it ended.
LONG_TASKS = """window.__longTasks = [];
new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__longTasks.push(e.duration); })
  .observe({ type: "longtask", buffered: true });"""
# The baseline's minimap, loaded as the viewer did before issue 21: plotly.min.js, once the turns
# in view are on screen and a frame painted (its evaluation is the long task; the scattergl
# drawing that followed, and failed under the CSP, is not counted).
PLOTLY_AFTER_TURNS = """new MutationObserver((_, observer) => {
  if (!document.querySelector(".turn .turn-text")) return;
  observer.disconnect();
  requestAnimationFrame(() => setTimeout(() => {
    const script = document.createElement("script");
    script.src = "/static/vendor/plotly/plotly.min.js";
    script.async = true;
    document.head.append(script);
  }, 0));
}).observe(document, { childList: true, subtree: true });"""
RUNS = 5


def bench_browser(ids: dict[int, int]) -> None:
    # The baseline server: the same database, the static setup before issue 21.
    baseline_env = {"DJANGO_SETTINGS_MODULE": "_baseline_static_settings",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))}
    with daphne_server() as base, daphne_server(baseline_env) as baseline:
        browse({"": base, "_baseline": baseline}, ids)


def visit(browser, base: str, session: str, path: str, selector: str, baseline: bool) -> dict[str, float]:
    """One cold visit (new context, empty cache): time to ``selector`` on screen, the longest
    main-thread task until the page is idle, the JS heap and the bytes fetched."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_cookies([{"name": "sessionid", "value": session, "url": base}])
    context.add_init_script(LONG_TASKS + (PLOTLY_AFTER_TURNS if baseline else ""))
    page = context.new_page()
    responses: list = []
    page.on("response", lambda r: responses.append(r))  # sized after timing
    cdp = context.new_cdp_session(page)
    cdp.send("Performance.enable")
    start = time.perf_counter()
    page.goto(base + path, wait_until="commit")
    page.wait_for_selector(selector)
    on_screen = (time.perf_counter() - start) * 1000
    page.wait_for_load_state("networkidle")
    if baseline:
        page.wait_for_function("() => window.Plotly !== undefined")
    page.wait_for_timeout(300)  # a task still running when the network went quiet
    longest = page.evaluate("() => Math.max(0, ...window.__longTasks)")
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    sizes = {r.url: len(r.body()) for r in responses if r.status == 200}
    # Bytes on the wire: what the server sent (compressed when it compressed), headers aside.
    wire = sum(int(r.headers.get("content-length") or sizes.get(r.url, 0)) for r in responses if r.status == 200)
    context.close()
    return {"ms": on_screen, "longest": longest, "heap": metrics["JSHeapUsedSize"] / 1e6, "wire": wire / 1e6,
            "data": sum(v for k, v in sizes.items() if "/static/" not in k) / 1e6}


def browse(servers: dict[str, str], ids: dict[int, int]) -> None:
    from django.contrib.auth import get_user_model
    from playwright.sync_api import sync_playwright

    client = Client()
    client.force_login(get_user_model().objects.get(username="admin"))
    session = client.cookies["sessionid"].value
    # "Cold" is the browser's side (new context, empty cache); each server process has served a
    # page and a chunk before, as a running server has.
    import urllib.request

    for base in servers.values():
        warm = urllib.request.Request(f"{base}/trajectories/{ids[1000]}/", headers={"Cookie": f"sessionid={session}"})
        urllib.request.urlopen(warm).read()
        warm.full_url = f"{base}/api/trajectories/{ids[1000]}/turns/?start=0&end=100"
        urllib.request.urlopen(warm).read()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        login = [visit(browser, servers[""], "", "/login/", "#id_username", False)["ms"] for _ in range(3)]
        line("browser_login_page_on_screen_baseline", statistics.median(login), "ms", "baseline, cold")
        for n, trajectory_id in ids.items():
            figures = {}
            for suffix, base in servers.items():
                samples = [visit(browser, base, session, f"/trajectories/{trajectory_id}/#turn-{n - 1}",
                                 f"#turn-{n - 1} .turn-text", bool(suffix)) for _ in range(RUNS)]
                figure = figures[suffix] = {key: statistics.median(s[key] for s in samples) for key in samples[0]}
                what = "baseline: before issue 21 (plotly after the turns, static files uncompressed)" if suffix else ""
                line(f"browser_last_turn_on_screen_{n}_turns{suffix}", figure["ms"], "ms",
                     what or f"< 500 ms, cold, median of {RUNS}")
                line(f"browser_longest_task_{n}_turns{suffix}", figure["longest"], "ms",
                     what or f"< 200 ms, cold, median of {RUNS}")
                line(f"browser_js_heap_{n}_turns{suffix}", figure["heap"], "MB", what or "< 30 MB")
                line(f"browser_fetched_{n}_turns{suffix}", figure["wire"], "MB",
                     what or "bytes on the wire, cold cache (static files compressed, cached for a year after)")
            line(f"browser_fetched_data_{n}_turns", figures[""]["data"], "MB", "HTML + turn JSON only")
        browser.close()


if __name__ == "__main__":
    with embedded_redis_running():  # logins count failures in the cache
        main()
