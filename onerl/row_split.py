"""Row-split CPU work: independent rows (sequences) cut into one slice per core, each slice run
start to finish on its own worker thread with one intra-op thread.

Why: on a CPU the rollout and training of small models are chains of small matmuls (a decode
step: M = the batch, e.g. 128 x 256 x 512) and row ops. Split over the intra-op thread team,
every op pays a team wake-up and the BLAS's internal barriers; with ``OMP_WAIT_POLICY=PASSIVE``
(waiters sleep instead of spinning) two threads run such shapes no faster than one. Cut the
rows instead and the threads do not meet until the end: the cores overlap fully.

Users: the engine runs a ``generate`` call as one lane per worker (an engine over a slice of
the KV cache with a contiguous slice of the sequences: 1.2-1.5x the single engine's speed on the
step of benchmarks/bench_step_vs_trl.py); the trainer runs each micro-batch as one part per
worker, forward and backward (``Trainer.thread_groups``; the parts' gradients are added in
order). Each row's math is unchanged; only the matmuls' M differs.

    workers = RowWorkers.get()            # None with one intra-op thread: nothing to split
    outs = workers.map(fn, [rows_a, rows_b])

Tasks run under ``torch.inference_mode()`` unless ``map(..., inference=False)``. Each worker
sets its own intra-op thread count to 1 (thread-local in PyTorch and OpenMP; the process-wide
default it also writes, which new threads start from, is put back). The pool is rebuilt when
the thread count or the process (fork) changes.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

MIN_ROWS = 8   # fewer rows per slice than this: the slices' fixed costs outweigh the overlap


def _one_thread(ready: threading.Barrier) -> None:
    # PyTorch sets a thread's count lazily at its first parallel op, from the process default;
    # trigger that first so it cannot later undo the 1 set here.
    torch.zeros(1 << 17).add_(1)
    torch.set_num_threads(1)
    ready.wait()


def _run(fn, arg, inference: bool):
    if not inference:   # a new thread's grad mode is on
        return fn(arg)
    with torch.inference_mode():
        return fn(arg)


class RowWorkers:
    _pool: RowWorkers | None = None
    _lock = threading.Lock()

    def __init__(self, n: int):
        self.n, self.pid = n, os.getpid()
        ready = threading.Barrier(n + 1)
        self.pool = ThreadPoolExecutor(n, thread_name_prefix="onerl-rows",
                                       initializer=_one_thread, initargs=(ready,))
        for _ in range(n):   # start every thread now (the pool starts them lazily)
            self.pool.submit(int)
        ready.wait()
        torch.set_num_threads(n)   # the process default the workers overwrote

    @classmethod
    def get(cls) -> RowWorkers | None:
        """The process's workers for the current intra-op thread count (None when it is 1)."""
        n = torch.get_num_threads()
        if n < 2:
            return None
        with cls._lock:
            pool = cls._pool
            if pool is None or pool.n != n or pool.pid != os.getpid():
                if pool is not None and pool.pid == os.getpid():
                    pool.pool.shutdown(wait=False)
                cls._pool = pool = RowWorkers(n)
        return pool

    def slices(self, rows: int) -> list[slice]:
        """Contiguous near-equal slices of ``rows``: one per thread, fewer when a slice would
        have under ``MIN_ROWS`` rows."""
        k = max(1, min(self.n, rows // MIN_ROWS))
        bounds = [rows * i // k for i in range(k + 1)]
        return [slice(a, b) for a, b in zip(bounds, bounds[1:])]

    def map(self, fn, args: list, inference: bool = True) -> list:
        """[fn(a) for a in args], each on a worker thread, under ``torch.inference_mode()``
        unless ``inference`` is False (then with grad mode on)."""
        futures = [self.pool.submit(_run, fn, a, inference) for a in args]
        return [f.result() for f in futures]
