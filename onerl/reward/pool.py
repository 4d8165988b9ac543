"""A persistent pool of symbolic-check worker processes with a hard per-item deadline.

Design:

* Each worker is a fresh interpreter started with :mod:`subprocess` (``python -c`` running
  :func:`onerl.reward.worker.serve`), talking over two private pipes.  Measured on the 2-core dev box with
  torch imported and its OpenMP threads started in the caller: ``fork`` gives a worker in ~1 s but the
  child inherits torch and the caller's thread state (unsafe, and a trainer's whole address space);
  multiprocessing's ``spawn`` and ``forkserver`` take ~5 s and ~260 MB per worker because they re-import
  the caller's ``__main__`` (and with it torch) in every worker, which also requires the caller to have a
  ``__main__`` guard.  A plain exec avoids all of that: ~65 MB, about 1 s of imports plus ~2 s of optional
  warm-up (``warm_up``) on an idle box, no torch, nothing of the caller re-run.
* Workers start lazily, on the first item, and announce ``ready``; an item's deadline starts when it is
  sent, so start-up time is never charged to an item.
* Items are queued and dispatched to idle workers as they arrive (:meth:`SymbolicPool.submit`), so the
  caller can keep working while checks run; one item in flight per worker.
* An item not answered within ``deadline_s`` gets reason ``timeout``; its worker is killed (SIGKILL),
  reaped, and replaced when there is more work.  A worker that dies on its own (memory cap, crash) also
  yields ``timeout`` for its item.
* Workers are recycled after ``max_items`` items (sympy's and the parser's caches only grow).
* :meth:`SymbolicPool.close` closes the pipes (workers exit on end of input), waits briefly, kills
  stragglers and reaps every child, so no zombies are left.  It is registered with :mod:`atexit` through
  :func:`weakref.finalize`, is idempotent, and does nothing in a forked copy of the caller.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from multiprocessing.connection import Connection, wait
from pathlib import Path

from .verdict import TIMEOUT

_ROOT = str(Path(__file__).resolve().parents[2])
_LAUNCH = ("import sys; sys.path.insert(0, {root!r}); from onerl.reward.worker import serve; "
           "serve({read}, {write}, {memory}, {backstop}, {warm_up})")
_START_TIMEOUT_S = 120.0


class _Worker:
    """One worker process and its pipes."""

    def __init__(self, memory_mb: int, backstop_s: int, warm_up: bool):
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        code = _LAUNCH.format(root=_ROOT, read=to_child_r, write=from_child_w, memory=memory_mb,
                              backstop=backstop_s, warm_up=int(warm_up))
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(to_child_r, from_child_w),
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env,
                                         close_fds=True)
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.outbox = Connection(to_child_w, readable=False)
        self.inbox = Connection(from_child_r, writable=False)
        self.ready = False
        self.started = time.monotonic()
        self.item: int | None = None   # key of the item in flight
        self.sent_at = 0.0
        self.done = 0

    def send(self, key: int, answer: str, gold: str) -> None:
        self.item, self.sent_at = key, time.monotonic()
        self.outbox.send_bytes(json.dumps([key, answer, gold]).encode())

    def stop(self, kill: bool) -> None:
        """End the process and reap it; never leaves a zombie."""
        for conn in (self.outbox, self.inbox):
            try:
                conn.close()
            except OSError:
                pass
        if kill:
            self.proc.kill()
        try:
            self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _shutdown(workers: list[_Worker], owner_pid: int) -> None:
    if os.getpid() != owner_pid:
        return  # a forked copy of the caller: the workers belong to the original process
    for w in workers:
        w.stop(kill=w.item is not None)
    workers.clear()


class SymbolicPool:
    """Runs ``(answer, gold)`` symbolic checks in ``workers`` processes, each with a hard deadline.

    Streaming use: :meth:`submit` items as they turn up (they are dispatched at once to idle workers),
    call :meth:`poll` now and then to keep the workers busy, and :meth:`wait_all` at the end.  Batch use:
    :meth:`run`.
    """

    def __init__(self, workers: int = 2, deadline_s: float = 5.0, max_items: int = 5000,
                 memory_mb: int = 3072, warm_up: bool = True):
        if workers < 1:
            raise ValueError("workers must be >= 1")
        if deadline_s <= 0:
            raise ValueError("deadline_s must be > 0")
        self.size, self.deadline_s, self.max_items, self.memory_mb = workers, deadline_s, max_items, memory_mb
        self.warm_up = warm_up
        self._backstop_s = int(deadline_s * 4) + 5
        self._workers: list[_Worker] = []
        self._todo: deque[tuple[int, str, str]] = deque()
        self._inflight = 0
        self._done: dict[int, tuple[str, float]] = {}
        self._lock = threading.RLock()
        self.stats = {"items": 0, "timeouts": 0, "respawns": 0, "max_item_s": 0.0}
        self._finalizer = weakref.finalize(self, _shutdown, self._workers, os.getpid())

    def start(self) -> None:
        """Start all workers now and wait until they are ready (otherwise they start on first need)."""
        with self._lock:
            if not self._finalizer.alive:
                raise RuntimeError("SymbolicPool is closed")
            while len(self._workers) < self.size:
                self._spawn()
            while not all(w.ready for w in self._workers):
                self._pump(None)

    # -- streaming interface ------------------------------------------------------------------------
    def submit(self, key: int, answer: str, gold: str) -> None:
        """Queue one check under the caller's integer ``key`` and dispatch it if a worker is idle."""
        with self._lock:
            if not self._finalizer.alive:
                raise RuntimeError("SymbolicPool is closed")
            self._todo.append((key, answer, gold))
            self._pump(0.0)

    def poll(self) -> dict[int, tuple[str, float]]:
        """Dispatch queued items, collect finished ones without blocking: {key: (reason, seconds)}."""
        with self._lock:
            if self._todo or self._inflight:
                self._pump(0.0)
            return self._take_done()

    def wait_all(self) -> dict[int, tuple[str, float]]:
        """Block until every submitted item has a result; returns those not yet collected."""
        with self._lock:
            while self._todo or self._inflight:
                self._pump(None)
            return self._take_done()

    def run(self, pairs: list[tuple[str, str]]) -> list[tuple[str, float]]:
        """Check every pair; returns ``(reason, seconds)`` per pair, in order."""
        with self._lock:
            for i, (answer, gold) in enumerate(pairs):
                self.submit(i, answer, gold)
            done = self.wait_all()
            return [done[i] for i in range(len(pairs))]

    # -- internals ----------------------------------------------------------------------------------
    def _take_done(self) -> dict[int, tuple[str, float]]:
        done, self._done = self._done, {}
        return done

    def _spawn(self) -> _Worker:
        worker = _Worker(self.memory_mb, self._backstop_s, self.warm_up)
        self._workers.append(worker)
        return worker

    def _retire(self, worker: _Worker, kill: bool) -> None:
        self._workers.remove(worker)
        worker.stop(kill=kill)

    def _finish(self, key: int, reason: str, elapsed: float) -> None:
        self._done[key] = (reason, elapsed)
        self._inflight -= 1
        self.stats["items"] += 1
        self.stats["max_item_s"] = max(self.stats["max_item_s"], elapsed)

    def _pump(self, timeout: float | None) -> None:
        """Dispatch, then wait up to ``timeout`` seconds (None: until something happens) for messages,
        and enforce deadlines."""
        wanted = min(self.size, len(self._workers) + len(self._todo))
        while len(self._workers) < wanted:
            self._spawn()
        for w in list(self._workers):
            if w.ready and w.item is None and self._todo:
                key, answer, gold = self._todo.popleft()
                try:
                    w.send(key, answer, gold)
                    self._inflight += 1
                except OSError:
                    self._todo.appendleft((key, answer, gold))
                    w.item = None
                    self._retire(w, kill=True)
        if timeout is None:
            now = time.monotonic()
            waits = [w.sent_at + self.deadline_s - now for w in self._workers if w.item is not None]
            waits += [w.started + _START_TIMEOUT_S - now for w in self._workers if not w.ready]
            timeout = max(0.0, min(waits, default=0.0))
        for conn in wait([w.inbox for w in self._workers], timeout=timeout):
            w = next(w for w in self._workers if w.inbox is conn)
            try:
                message = json.loads(conn.recv_bytes())
            except (EOFError, OSError, ValueError):
                self._lost(w)
                continue
            if message == ["ready"]:
                w.ready = True
                continue
            key, reason, _ = message
            self._finish(key, reason, time.monotonic() - w.sent_at)
            w.item, w.done = None, w.done + 1
            if w.done >= self.max_items:
                self._retire(w, kill=False)
        now = time.monotonic()
        for w in list(self._workers):
            if w.item is not None and now - w.sent_at > self.deadline_s:
                self._lost(w)
            elif not w.ready and now - w.started > _START_TIMEOUT_S:
                self._retire(w, kill=True)
                raise RuntimeError("a symbolic-check worker failed to start")

    def _lost(self, w: _Worker) -> None:
        """Kill ``w`` (deadline missed or the process died); its item, if any, is a timeout."""
        key = w.item
        if key is None and not w.ready:
            self._retire(w, kill=True)
            raise RuntimeError("a symbolic-check worker died while starting")
        elapsed = time.monotonic() - w.sent_at
        self._retire(w, kill=True)
        self.stats["respawns"] += 1
        if key is not None:
            self.stats["timeouts"] += 1
            self._finish(key, TIMEOUT, elapsed)

    def pids(self) -> list[int]:
        """Process ids of the live workers (for tests and monitoring)."""
        return [w.proc.pid for w in self._workers]

    def close(self) -> None:
        """Stop every worker and reap it.  Safe to call more than once."""
        with self._lock:
            self._todo.clear()
            self._finalizer()

    def __enter__(self) -> "SymbolicPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
