"""The rollout pool: many agent sessions at once, each in its own sandbox, with partial rollouts.

KLong ran 10,000+ sandboxes at once; one session after another cannot get near that. The pool
runs up to ``concurrency`` sessions in threads (a session spends its life waiting: on the model,
which the inference engine batches with the other sessions' calls, or on a tool in its sandbox),
spread over the Docker hosts with at most ``per_host`` each (``KLONG_SANDBOXES_PER_HOST``; the
Redis slots of ``open_sandbox`` still hold the limit across workers).

Every session reports its state (waiting for a sandbox, on the model, on tools, paused for a
weight swap, done, failed): ``RolloutStates`` keeps the live counts the job page shows, and the
slot time that went unused, which is what partial rollouts are for.

Two ways of producing an iteration's batch of n rollouts per task:

- partial rollouts off: launch the batch, wait for every rollout, train; the slots idle while the
  batch's slowest rollouts finish and while the trainer works;
- partial rollouts on (KLong, slime, AReaL): the pool keeps its slots busy all the time. An
  iteration takes the first n *finished* rollouts of each task; unfinished ones keep running
  through the update (the engine serves the old weights until the swap) and go on with the new
  policy, each assistant turn recording the version that generated it (a rollout is a list of
  segments, one per version), so nothing a sandbox did is thrown away. Staleness is bounded at
  launch, as AReaL does: at most ``batch x (1 + max_staleness)`` rollouts are launched and not
  yet trained on. The last iteration of a stage launches nothing more and waits for every
  rollout in flight (they keep the stage's timeout: a stage boundary still cuts at T(m)).

A session that fails (its sandbox killed, the engine unreachable) fails that rollout only; the
batch goes on without it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

STATES = ("waiting_sandbox", "on_model", "on_tools", "paused", "done", "failed")
ACTIVE = ("waiting_sandbox", "on_model", "on_tools")  # a slot doing its work
_session = threading.local()


class RolloutStates:
    """Live counts of the pool's sessions by state, and the slot time they used.

    ``busy_s(t0, t1)`` integrates the number of sessions making progress (not paused, not done)
    over time, so ``idle_share`` = 1 - busy / (slots x wall time): the share of sandbox slot time
    spent waiting (for the trainer, for a straggler, for a weight swap).
    """

    def __init__(self, slots: int, on_change: Callable[[dict[str, int]], None] | None = None) -> None:
        self.slots = slots
        self.on_change = on_change
        self._lock = threading.Lock()
        self._of: dict[Any, str] = {}
        self.counts = dict.fromkeys(STATES, 0)
        self._active = 0
        self.peak = 0  # the most sessions active at once
        self._since = time.monotonic()
        self._busy = 0.0  # integral of active sessions over time, up to _since
        self._marks: list[tuple[float, float]] = [(self._since, 0.0)]

    def _advance(self, now: float) -> None:
        self._busy += self._active * (now - self._since)
        self._since = now
        self._marks.append((now, self._busy))

    def set(self, key: Any, state: str) -> None:
        if state not in STATES:
            raise ValueError(f"unknown rollout state {state!r}")
        with self._lock:
            previous = self._of.get(key)
            if previous == state:
                return
            self._advance(time.monotonic())
            if previous is not None:
                self.counts[previous] -= 1
                self._active -= previous in ACTIVE
            self._of[key] = state
            self.counts[state] += 1
            self._active += state in ACTIVE
            self.peak = max(self.peak, self._active)
            snapshot = dict(self.counts)
        if self.on_change is not None:
            self.on_change(snapshot)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def busy_at(self, when: float) -> float:
        """Busy slot-seconds from the start up to ``when`` (monotonic clock)."""
        with self._lock:
            self._advance(time.monotonic())
            marks = list(self._marks)
        before = [m for m in marks if m[0] <= when]
        if not before:
            return 0.0
        t, busy = before[-1]
        after = next((m for m in marks if m[0] > when), None)
        if after is None:
            return busy
        # the active count was constant between two marks: interpolate
        return busy + (after[1] - busy) * (when - t) / (after[0] - t)

    def idle_share(self, t0: float, t1: float) -> float:
        if t1 <= t0:
            return 0.0
        busy = self.busy_at(t1) - self.busy_at(t0)
        return max(0.0, 1.0 - busy / (self.slots * (t1 - t0)))


@dataclass
class Session:
    """What a runner may ask of the pool while it runs one rollout (``current_session()``)."""

    key: tuple[str, int]
    states: RolloutStates | None = None
    host: str = ""  # the Docker host this session's sandbox goes to
    stop: threading.Event | None = None  # set when the pool is closed on a failure: the session ends early

    def cancelled(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def state(self, name: str) -> None:
        if self.states is not None:
            self.states.set(self.key, name)

    def recording(self, trajectory: int) -> None:
        """The session's rollout is recorded as this Trajectory (a driver process tells the job's
        process, which closes it if the driver dies before the rollout ends)."""
        tell = getattr(self.states, "recording", None)
        if tell is not None:
            tell(self.key, trajectory)


def current_session() -> Session | None:
    """The session the calling thread runs for the pool (None outside the pool)."""
    return getattr(_session, "value", None)


@contextlib.contextmanager
def in_session(session: Session) -> Iterator[Session]:
    """Run the body as ``session`` (what ``current_session()`` answers in this thread)."""
    _session.value = session
    try:
        yield session
    finally:
        _session.value = None


class RolloutFailed(RuntimeError):
    """A rollout that could not finish (its sandbox died, the engine failed): dropped from the batch."""


@dataclass
class _Slot:
    task: int
    index: int
    seed: int
    future: Future | None = None
    host: str = ""
    started: bool = False


class RolloutPool:
    """Produces each iteration's rollouts with up to ``concurrency`` sessions at once."""

    def __init__(self, tasks: Sequence[Any], runner: Any, policy: Any, *, n_rollouts: int, timeout_s: float,
                 seed_for: Callable[[int, int, int], int], concurrency: int = 1, partial: bool = False,
                 max_staleness: int = 1, hosts: Sequence[str] = ("",), per_host: int = 0,
                 states: RolloutStates | None = None, is_failure: Callable[[Any], bool] | None = None,
                 should_stop: Callable[[], bool] | None = None, iterations: int = 1 << 30,
                 drivers: Any = None) -> None:
        self.tasks = list(tasks)
        self.runner = runner
        self.policy = policy
        self.n = n_rollouts
        self.timeout_s = timeout_s
        self.seed_for = seed_for  # (batch, task, index) -> sampling seed
        self.partial = partial
        self.max_staleness = max(0, max_staleness)
        self.hosts = list(hosts) or [""]
        self.per_host = per_host
        cap = len(self.hosts) * per_host if per_host > 0 else concurrency
        self.concurrency = max(1, min(concurrency, cap))
        self.states = states or RolloutStates(self.concurrency)
        self.is_failure = is_failure or (lambda rollout: False)
        self.should_stop = should_stop
        # rl_drivers.DriverGroup: the sessions run in driver processes (the pool owns it: close() closes it)
        self.drivers = drivers
        self._executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="rl-rollout")
        self._cond = threading.Condition()
        self._running: list[_Slot] = []
        self._finished: list[tuple[_Slot, Any]] = []  # (slot, rollout) not yet handed to an iteration
        self._launched = [0] * len(self.tasks)  # rollouts launched per task
        self._budget = iterations * n_rollouts  # launched per task in the stage: its iterations' batches
        self._batches = 0
        self._closing = False
        self._stop = threading.Event()
        self._launching = True
        self.failed: list[tuple[str, int, str]] = []  # (task id, index, why)
        self.host_peak: dict[str, int] = {}  # the most sessions at once on each Docker host
        self.failed_this_batch = 0

    # -- sessions -----------------------------------------------------------------------

    def _host(self) -> str:
        """The Docker host with the fewest of this pool's sessions (under ``_cond``)."""
        load = dict.fromkeys(self.hosts, 0)
        for slot in self._running:
            if slot.started:
                load[slot.host] = load.get(slot.host, 0) + 1
        return min(self.hosts, key=lambda h: load[h])

    def _launch(self, task: int, batch: int) -> None:
        index = self._launched[task]
        self._launched[task] += 1
        slot = _Slot(task, index, self.seed_for(batch, task, index))
        self._running.append(slot)
        slot.future = self._executor.submit(self._session, slot, (self.tasks[task].id, index))

    def _session(self, slot: _Slot, key: tuple[str, int]) -> None:
        with self._cond:
            slot.host, slot.started = self._host(), True
            on_host = sum(1 for other in self._running if other.started and other.host == slot.host)
            self.host_peak[slot.host] = max(self.host_peak.get(slot.host, 0), on_host)
        self.states.set(key, "waiting_sandbox")
        outcome: Any
        try:
            if self.drivers is not None:  # in a driver process; this thread only waits for it
                outcome = self.drivers.run(slot.task, slot.index, self.timeout_s, slot.seed, key, slot.host)
            else:
                with in_session(Session(key, self.states, slot.host, self._stop)):
                    outcome = self.runner.run(self.tasks[slot.task], slot.index, self.timeout_s, self.policy,
                                              slot.seed)
            if self.is_failure(outcome):
                outcome = RolloutFailed(f"ended {getattr(outcome, 'end_state', '?')}: "
                                        f"{getattr(outcome, 'meta', {}).get('error', '')}")
        except BaseException as exc:  # noqa: BLE001 - one session's failure is that rollout's, not the batch's
            outcome = exc
        failed = isinstance(outcome, BaseException)
        self.states.set(key, "failed" if failed else "done")
        with self._cond:
            self._running.remove(slot)
            if failed:
                log.warning("rollout %s/%d failed: %s", key[0], key[1], outcome)
                self.failed.append((key[0], key[1], f"{type(outcome).__name__}: {outcome}"[:300]))
                self.failed_this_batch += 1
            else:
                self._finished.append((slot, outcome))
            self._top_up()
            self._cond.notify_all()

    def _unconsumed(self) -> int:
        return len(self._running) + len(self._finished)

    def _top_up(self) -> None:
        """Partial rollouts: keep every slot busy, within the staleness bound (under ``_cond``)."""
        if not (self.partial and self._launching) or self._closing:
            return
        bound = len(self.tasks) * self.n * (1 + self.max_staleness)
        while len(self._running) < self.concurrency and self._unconsumed() < bound:
            # the task furthest behind gets the next rollout, within the stage's batches
            task = min(range(len(self.tasks)), key=lambda t: (self._launched[t], t))
            if self._launched[task] >= self._budget:
                return
            self._launch(task, self._batches)

    # -- batches ------------------------------------------------------------------------

    def next_batch(self, *, last: bool, on_wait: Callable[[], None] | None = None,
                   every_s: float = 1.0) -> tuple[list[Any], float]:
        """This iteration's rollouts and the seconds the caller waited for them; ``on_wait`` is
        called about every ``every_s`` seconds meanwhile, in the calling thread (live progress)."""
        started = time.perf_counter()
        batch = self._batches
        self._batches += 1
        self.failed_this_batch = 0
        with self._cond:
            if not self.partial:
                for t in range(len(self.tasks)):
                    for _ in range(self.n):
                        self._launch(t, batch)
            else:
                self._launching = not last
                # every task has n rollouts running or finished for this batch (a failed one replaced)
                have = [0] * len(self.tasks)
                for slot in [*self._running, *(f[0] for f in self._finished)]:
                    have[slot.task] += 1
                for t in range(len(self.tasks)):
                    for _ in range(self.n - have[t]):
                        if self._launched[t] < self._budget:
                            self._launch(t, batch)
                self._top_up()
            told = time.monotonic()
            while not self._ready(last):
                if self.should_stop is not None and self.should_stop():
                    raise InterruptedError("stopped")
                self._cond.wait(timeout=0.2)
                if on_wait is not None and time.monotonic() - told >= every_s:
                    told = time.monotonic()
                    self._cond.release()
                    try:
                        on_wait()
                    finally:
                        self._cond.acquire()
            taken = self._take(last)
        rollouts = [r for _, r in sorted(taken, key=lambda item: (item[0].task, item[0].index))]
        return rollouts, time.perf_counter() - started

    def _ready(self, last: bool) -> bool:
        if not self.partial or last:
            return not self._running
        done, running = [0] * len(self.tasks), [0] * len(self.tasks)
        for slot, _ in self._finished:
            done[slot.task] += 1
        for slot in self._running:
            running[slot.task] += 1
        # each task has its n, or nothing more can come for it (its rollouts failed, none left to launch)
        return all(done[t] >= self.n or (not running[t] and self._launched[t] >= self._budget)
                   for t in range(len(self.tasks)))

    def _take(self, last: bool) -> list[tuple[_Slot, Any]]:
        if not self.partial or last:
            taken, self._finished = self._finished, []
            return taken
        taken, kept, per_task = [], [], [0] * len(self.tasks)
        for slot, rollout in sorted(self._finished, key=lambda item: (item[0].task, item[0].index)):
            if per_task[slot.task] < self.n:
                taken.append((slot, rollout))
                per_task[slot.task] += 1
            else:
                kept.append((slot, rollout))
        self._finished = kept
        self._top_up()  # the slots the taken rollouts held under the bound are free again
        return taken

    def close(self, *, cancel: bool = False) -> None:
        """Stop launching and wait for the sessions in flight (a stage's end); with ``cancel`` (the run
        failed or was stopped) the sessions are told to end now (``Session.cancelled``) first."""
        with self._cond:
            self._closing = True
        if cancel:
            self._stop.set()
            if self.drivers is not None:
                self.drivers.cancel()
        self._executor.shutdown(wait=True, cancel_futures=cancel)
        if self.drivers is not None:
            self.drivers.close()


def run_concurrently(items: Sequence[Any], work: Callable[[Any], Any], concurrency: int,
                     on_done: Callable[[Any, Any], None], states: RolloutStates | None = None,
                     key: Callable[[Any], Any] = lambda item: item) -> None:
    """``work(item)`` for every item with up to ``concurrency`` at once; ``on_done(item, result)`` is
    called in the calling thread as each finishes (job progress and database writes stay there).
    An exception from ``work`` is handed to ``on_done`` as the result; one from ``on_done`` stops
    the run (no new item starts) and is raised once the ones in flight have ended."""

    def one(item: Any) -> Any:
        with in_session(Session(key(item), states)) as session:
            session.state("on_model")
            try:
                return work(item)
            except BaseException as exc:  # noqa: BLE001 - handed to on_done
                return exc

    pending = list(items)
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="agent-run") as pool:
        running: dict[Future, Any] = {}
        try:
            while pending or running:
                while pending and len(running) < max(1, concurrency):
                    item = pending.pop(0)
                    running[pool.submit(one, item)] = item
                done = next(iter(wait(list(running), return_when=FIRST_COMPLETED)[0]))
                item = running.pop(done)
                result = done.result()
                if states is not None:
                    states.set(key(item), "failed" if isinstance(result, BaseException) else "done")
                on_done(item, result)
        except BaseException:
            pending.clear()
            raise

