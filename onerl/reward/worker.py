"""The worker process: runs symbolic checks one at a time for :mod:`.pool`.

Started as a fresh interpreter (``python -c ...``), never forked from the caller, so it inherits no threads
(torch, OpenMP) and never re-imports the caller's ``__main__``.  Protocol over two pipes, one JSON message
each way per item:

* worker -> pool ``["ready"]`` once sympy and math-verify are imported and (unless ``warm_up`` is 0)
  warmed up on a few pairs that exercise the grammar, ``simplify`` and ``solve``;
* pool -> worker ``[id, answer, gold]`` (canonical strings);
* worker -> pool ``[id, reason, seconds]`` with reason ``correct`` / ``wrong`` / ``parse_error`` /
  ``timeout`` (the last one for a memory error).

The pool kills a worker that misses its deadline.  As a second line of defence the worker limits its own
address space (``RLIMIT_AS``) and arms ``SIGALRM`` with the default action for each item, so it dies on its
own if it ever outlives a much later backstop (for example when the pool's process is gone).  End of input
on the pipe (the pool closed it or exited) ends the worker.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
from multiprocessing.connection import Connection


# Exercise the LaTeX grammar (ANTLR builds its prediction tables lazily) and sympy's simplify, solve and
# evalf before the first real item, so that warm-up cost is never charged to an item's deadline.
_WARM_UP = [("x(x+1)", "x^{2}+x"), ("0.5", "\\frac{\\sqrt{2}}{2}"), ("\\frac{\\sin x}{\\cos x}", "\\tan x"),
            ("y=x+1", "y=1+x"), ("x^{2}+y^{2}=4", "y^{2}+x^{2}=5"), ("2i+1", "1+2i"), ("k\\geq2", "2\\leq k"),
            ("\\exp(2x)", "e^{x2}"), ("\\ln9", "2\\ln3"), ("x^{1/2}", "\\sqrt[3]{x}"), ("\\cot x", "\\cos x"),
            ("\\frac{(2n)!}{n!}", "\\binom{2n}{n}"), ("\\lfloor x\\rfloor", "\\lceil x\\rceil"), ("f(x)", "f(2x)"),
            ("x_{1}+x_{2}", "x_{2}+x_{1}"), ("|x-1|", "\\left|1-x\\right|"), ("\\log_{2}8", "3"),
            ("\\arcsin\\frac{1}{2}", "\\frac{\\pi}{6}"), ("a\\cdot b", "b\\times a"), ("10^{-3}x", "0.001x")]


def _limit_memory(megabytes: int) -> None:
    if megabytes <= 0:
        return
    limit = megabytes * 1024 * 1024
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ValueError, OSError):
        pass


def serve(read_fd: int, write_fd: int, memory_mb: int, backstop_s: int, warm_up: int = 1) -> None:
    """Main loop of a worker process."""
    inbox = Connection(read_fd, writable=False)
    outbox = Connection(write_fd, readable=False)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the caller, which shuts us down
    _limit_memory(memory_mb)

    from .equiv import equivalent
    from .symbolic import symbolic_equal
    from .verdict import CORRECT, PARSE_ERROR, TIMEOUT, WRONG

    for answer, gold in _WARM_UP if warm_up else ():  # first parses / simplify() calls are slow
        try:
            symbolic_equal(answer, gold)
        except Exception:  # noqa: BLE001 - warm-up only
            pass
    outbox.send_bytes(b'["ready"]')
    while True:
        try:
            item_id, answer, gold = json.loads(inbox.recv_bytes())
        except (EOFError, OSError):
            return
        signal.alarm(backstop_s)
        start = time.perf_counter()
        try:
            reason = CORRECT if equivalent(answer, gold, symbolic_equal) else WRONG
        except MemoryError:
            reason = TIMEOUT      # over the memory cap: a resource limit, like the deadline
        except Exception:  # noqa: BLE001 - Unparseable, RecursionError, anything sympy raises
            reason = PARSE_ERROR
        elapsed = time.perf_counter() - start
        signal.alarm(0)
        try:
            outbox.send_bytes(json.dumps([item_id, reason, elapsed]).encode())
        except (BrokenPipeError, OSError):
            return


if __name__ == "__main__":
    serve(*map(int, sys.argv[1:6]))
    os._exit(0)
