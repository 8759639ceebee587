"""Rollout driver processes: the pool's sessions spread over several Python processes.

The pool runs its sessions as threads of the RL job's process, and every agent step spends some
of that one process's CPU under its one GIL (the model call over HTTP, the sandbox calls, the
turn's rows): docs/deploy.md measures ~17-27 ms a step, so one process tops out at a few hundred
sandboxes. ``DriverGroup`` runs the sessions in ``processes`` driver processes instead, each with
its own threads, GIL and database connections; the pool keeps the scheduling (slots, hosts,
partial rollouts, batches) and each session's thread in the job's process only waits.

What crosses the boundary, over one socket pair per driver (``multiprocessing.connection``:
length-framed pickles between this process and a child it started, nobody else's):

- at start, the settings the child must share (the database, the data folder, ``KLONG_*``), then
  the runner, the served policy and the tasks;
- per session: ``run`` out, the session's states (on the model, on tools, paused) back as they
  change, and the finished ``Rollout`` or the failure's text;
- weight swaps: the job's ``WeightGate`` lists the group as a peer, so a swap waits for every
  driver's calls in flight and holds its new ones (``swap_begin``/``swap_ready``), then hands them
  the new version (``swap_end``): one call never mixes two versions, as with threads;
- ``cancel`` (the run failed or was stopped: sessions end now) and ``close``.

A driver that dies (killed, out of memory) fails the rollouts it was running, not the batch; the
next sessions go to the drivers still alive. A child whose parent dies sees the socket close and
cancels its sessions (their sandboxes close).

Only a served policy (``RemotePolicy``) can be shared: a policy generating in this process's memory
cannot be called from another process.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections

from apps.trajectories.models import Trajectory
from apps.trajectories.recorder import TrajectoryRecorder
from worker.training.rl_pool import RolloutFailed, RolloutStates, Session, in_session

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120.0  # a driver imports Django, torch and transformers before it answers
SHARED_SETTINGS = ("DATABASES", "DATA_DIR", "MEDIA_ROOT")  # besides every KLONG_* setting


class DriverError(RuntimeError):
    """The driver processes could not start or cannot take this work."""


@dataclass
class _Driver:
    process: subprocess.Popen
    conn: Connection
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    pending: dict[int, tuple[Future, tuple[str, int]]] = field(default_factory=dict)
    recording: dict[tuple[str, int], int] = field(default_factory=dict)  # session -> its Trajectory
    alive: bool = True
    swap_ready: threading.Event = field(default_factory=threading.Event)
    sessions: int = 0  # sessions sent to it in all

    def send(self, message: tuple) -> None:
        with self.send_lock:
            self.conn.send(message)


def shared_settings() -> dict[str, Any]:
    """This process's settings a driver must use too (a test's database, a bench's overrides)."""
    names = [n for n in dir(settings) if n.startswith("KLONG_") and n.isupper()] + list(SHARED_SETTINGS)
    return {n: getattr(settings, n) for n in names if hasattr(settings, n)}


class DriverGroup:
    """``processes`` driver processes running a pool's sessions, up to ``threads`` each at once."""

    def __init__(self, processes: int, threads: int, tasks: Sequence[Any], runner: Any, policy: Any,
                 states: RolloutStates | None = None) -> None:
        if processes < 1:
            raise DriverError("rollout driver processes must be at least 1")
        if (not callable(getattr(policy, "chat_client", None)) or not hasattr(policy, "gate")
                or getattr(policy, "model", None) is not None):
            raise DriverError("rollout driver processes need a served policy (an inference server, or the worker's "
                              "own policy server): a policy generating in this process cannot be shared")
        self.policy = policy
        self.states = states
        self._lock = threading.Lock()
        self._next_id = 0
        self._closed = False
        self._drivers: list[_Driver] = []
        self._readers: list[threading.Thread] = []
        try:
            # all of them importing at once, then each handed its work
            for _ in range(processes):
                self._drivers.append(self._spawn())
            for driver in self._drivers:
                self._hand_over(driver, threads, tasks, runner, policy)
        except BaseException:
            for driver in self._drivers:
                driver.alive = False
                driver.process.kill()
                driver.process.wait(timeout=30)
                driver.conn.close()
            raise
        for driver in self._drivers:
            reader = threading.Thread(target=self._read, args=(driver,), daemon=True, name="rl-driver-reader")
            reader.start()
            self._readers.append(reader)
        self._peers().append(self)

    def _peers(self) -> list[Any]:
        """The processes the policy's weight swaps wait for (``WeightGate.peers``): this group's drivers."""
        return self.policy.gate.peers

    @property
    def pids(self) -> list[int]:
        return [d.process.pid for d in self._drivers]

    def sessions_per_driver(self) -> dict[int, int]:
        return {d.process.pid: d.sessions for d in self._drivers}

    # -- starting ---------------------------------------------------------------------------

    @staticmethod
    def _spawn() -> _Driver:
        mine, theirs = socket.socketpair()
        try:
            process = subprocess.Popen([sys.executable, "-m", "worker.training.rl_driver_process", str(theirs.fileno())],
                                       pass_fds=(theirs.fileno(),), cwd=ROOT, stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        driver = _Driver(process, Connection(mine.detach()))
        driver.send(("boot", shared_settings()))
        return driver

    @staticmethod
    def _hand_over(driver: _Driver, threads: int, tasks: Sequence[Any], runner: Any, policy: Any) -> None:
        try:
            try:
                driver.send(("init", {"runner": runner, "policy": policy, "tasks": list(tasks), "threads": threads}))
            except (pickle.PicklingError, TypeError, AttributeError) as exc:
                raise DriverError(f"the rollouts' runner, policy or tasks cannot be sent to a driver process: "
                                  f"{type(exc).__name__}: {exc}") from None
            if not driver.conn.poll(START_TIMEOUT_S):
                raise DriverError(f"a rollout driver process did not start within {START_TIMEOUT_S:g} s")
            answer = driver.conn.recv()
        except (EOFError, OSError) as exc:
            driver.process.wait(timeout=30)
            raise DriverError(f"a rollout driver process exited while starting (exit code "
                              f"{driver.process.returncode}; its error is in the worker's log)") from exc
        if answer[0] != "ready":
            raise DriverError(f"a rollout driver process could not start: {answer[1]}")

    # -- sessions ---------------------------------------------------------------------------

    def run(self, task: int, index: int, timeout_s: float, seed: int, key: tuple[str, int], host: str) -> Any:
        """One rollout in the least busy live driver; blocks until it ends. A failure is raised as
        ``RolloutFailed`` with the driver's text (the pool drops that rollout)."""
        future: Future = Future()
        with self._lock:
            live = [d for d in self._drivers if d.alive]
            if self._closed or not live:
                raise RolloutFailed("no rollout driver process is running")
            driver = min(live, key=lambda d: len(d.pending))
            self._next_id += 1
            call = self._next_id
            driver.pending[call] = (future, key)
            driver.sessions += 1
        try:
            driver.send(("run", call, task, index, timeout_s, seed, key, host))
        except OSError as exc:
            self._lost(driver, f"cannot reach it: {exc}")
        return future.result()

    def _read(self, driver: _Driver) -> None:
        while True:
            try:
                message = driver.conn.recv()
            except (EOFError, OSError):
                break
            except Exception as exc:  # noqa: BLE001 - an answer that does not unpickle fails that driver
                log.error("rollout driver %s sent what cannot be read: %s", driver.process.pid, exc)
                break
            kind = message[0]
            if kind == "state":
                if self.states is not None:
                    self.states.set(message[1], message[2])
            elif kind == "recording":
                with self._lock:
                    driver.recording[message[1]] = message[2]
            elif kind in ("done", "failed"):
                with self._lock:
                    future, key = driver.pending.pop(message[1], (None, None))
                    driver.recording.pop(key, None)
                if future is not None:
                    if kind == "done":
                        future.set_result(message[2])
                    else:
                        future.set_exception(RolloutFailed(message[2]))
            elif kind == "swap_ready":
                driver.swap_ready.set()
        code = driver.process.wait()
        self._lost(driver, f"exited with code {code}")

    def _lost(self, driver: _Driver, why: str) -> None:
        """A driver gone: each rollout it was running fails (the rest of the batch goes on)."""
        with self._lock:
            driver.alive = False
            pending, driver.pending = driver.pending, {}
            recording, driver.recording = driver.recording, {}
        driver.swap_ready.set()  # a swap waiting on it goes on without it
        if pending and not self._closed:
            log.warning("rollout driver %s %s: %d rollouts failed", driver.process.pid, why, len(pending))
        error = f"its rollout driver process ({driver.process.pid}) {why}"
        try:
            # the trajectories it was writing end as errors, their turns kept (not "running" forever)
            for trajectory in Trajectory.objects.filter(pk__in=recording.values(), live=True):
                TrajectoryRecorder(trajectory).abandon(error)
        except Exception:  # noqa: BLE001 - the rollouts fail below all the same
            log.exception("could not close the trajectories of rollout driver %s", driver.process.pid)
        finally:
            if threading.current_thread() is not threading.main_thread():
                connections.close_all()
        for future, _ in pending.values():
            if not future.done():
                future.set_exception(RolloutFailed(error))

    def _broadcast(self, message: tuple) -> list[_Driver]:
        sent = []
        for driver in [d for d in self._drivers if d.alive]:
            try:
                driver.send(message)
                sent.append(driver)
            except OSError as exc:
                self._lost(driver, f"cannot reach it: {exc}")
        return sent

    # -- weight swaps (WeightGate peers) ------------------------------------------------------

    def begin_swap(self) -> None:
        """Every driver's model calls in flight finish and new ones wait, before the weights change."""
        for driver in self._drivers:
            driver.swap_ready.clear()
        for driver in self._broadcast(("swap_begin",)):
            driver.swap_ready.wait()

    def end_swap(self) -> None:
        """The new weights are served: the held calls go on, recording the new version."""
        self._broadcast(("swap_end", int(self.policy.version)))

    # -- ending ---------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Tell every session to end now (the run failed or was stopped)."""
        self._broadcast(("cancel",))

    def close(self, timeout_s: float = 60.0) -> None:
        """Stop the drivers once their sessions have ended (``cancel`` first to end them early)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self in self._peers():
            self._peers().remove(self)
        self._broadcast(("close",))
        for driver in self._drivers:
            try:
                driver.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                driver.process.kill()
                driver.process.wait()
            with contextlib.suppress(OSError):
                driver.conn.close()
        for reader in self._readers:
            reader.join(timeout=5)


# --------------------------------------------------------------------------- the driver process


class _RemoteStates:
    """What a session in a driver reports: sent to the pool's ``RolloutStates`` in the job's process."""

    def __init__(self, send: Any) -> None:
        self._send = send

    def set(self, key: Any, state: str) -> None:
        with contextlib.suppress(OSError):
            self._send(("state", key, state))

    def recording(self, key: Any, trajectory: int) -> None:
        with contextlib.suppress(OSError):
            self._send(("recording", key, trajectory))


def serve(conn: Connection) -> None:
    """A driver process's life (worker/training/rl_driver_process.py starts it, Django set up)."""
    init = conn.recv()[1]
    runner, policy, tasks = init["runner"], init["policy"], init["tasks"]
    send_lock = threading.Lock()

    def send(message: tuple) -> None:
        with send_lock:
            conn.send(message)

    states, stop = _RemoteStates(send), threading.Event()
    swap_end = threading.Event()
    new_version: list[int] = []

    def one(call: int, task: int, index: int, timeout_s: float, seed: int, key: tuple[str, int], host: str) -> None:
        try:
            with in_session(Session(key, states, host, stop)):
                rollout = runner.run(tasks[task], index, timeout_s, policy, seed)
            send(("done", call, rollout))
        except BaseException as exc:  # noqa: BLE001 - the session's failure goes back as text
            with contextlib.suppress(OSError):
                send(("failed", call, f"{type(exc).__name__}: {exc}"[:2000]))

    def swap() -> None:
        # this driver's calls in flight finish on the old weights; new ones wait here
        with policy.gate.swapping():
            send(("swap_ready",))
            swap_end.wait()
            swap_end.clear()
            policy.version = new_version.pop()

    send(("ready",))
    with ThreadPoolExecutor(max_workers=max(1, int(init["threads"])), thread_name_prefix="rl-driver") as pool:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the job's process is gone: end the sessions, close the sandboxes
                stop.set()
                new_version.append(int(policy.version))
                swap_end.set()  # a held swap lets its sessions go, to see that they are cancelled
                break
            kind = message[0]
            if kind == "run":
                pool.submit(one, *message[1:])
            elif kind == "swap_begin":
                threading.Thread(target=swap, daemon=True, name="rl-driver-swap").start()
            elif kind == "swap_end":
                new_version.append(int(message[1]))
                swap_end.set()
            elif kind == "cancel":
                stop.set()
            elif kind == "close":
                break
