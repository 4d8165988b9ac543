r"""Hostile inputs and the worker pool: nothing hangs, nothing is executed, the pool survives.

The adversarial table must finish within a generous wall-clock bound (the per-item deadline is what keeps it
bounded); a deliberately slow symbolic item must hit the deadline, be reported as ``timeout``, and the pool
must respawn its worker and keep working; workers must be reaped on close, on recycling and at exit.
"""
import pathlib
import subprocess
import sys
import textwrap
import time

import pytest

from onerl.reward import Verifier
from onerl.reward.pool import SymbolicPool

C, W, N, P, T = "correct", "wrong", "no_answer", "parse_error", "timeout"
REPO = pathlib.Path(__file__).resolve().parents[1]

# An equation pair that sympy needs far more than a second to compare (it passes every safety guard).
SLOW_ANSWER, SLOW_GOLD = "(x+1)^{200}(y+1)^{200}=0", "(x+1)^{199}(y+1)^{200}=0"

ADVERSARIAL = [  # (response, gold, acceptable reasons)
    ("x" * 100_000 + r" so the answer is \boxed{5}.", "5", {C}),
    (r"\boxed{5} " + "x" * 100_000, "5", {N}),                      # the box is outside the scanned tail
    ("Let me think. " * 8000 + r"\boxed{\frac{64}{5}}", "12.8", {C}),
    (r"\boxed{" + "{" * 3000 + "1" + "}" * 3000 + "}", "1", {P}),    # 3000-deep braces
    (r"\boxed{" * 10000, "1", {P}),                                 # 10000 unclosed boxes
    (r"\boxed{" + "(" * 3000 + "1" + ")" * 3000 + "}", "1", {P}),    # over the answer length cap
    (r"\boxed{" + "(" * 600 + "x" + ")" * 600 + "}", "x+1", {P}),    # within the caps, refused by the guards
    (r"\boxed{9^{9^{9}}}", "5", {W}),
    (r"\boxed{9^{9^{9}}}", "x^{2}", {P}),
    (r"\boxed{9^9^9}", "x^{2}", {P}),
    (r"\boxed{10^{10^{10}}}", "x+1", {P}),
    (r"\boxed{(10^{100})!}", "5", {W}),
    (r"\boxed{(10^{100})!}", "x+1", {P}),
    (r"\boxed{2^{1000000}}", r"2^{1000}", {P}),
    (r"\boxed{\sum_{k=1}^{10^{9}} k}", "x", {W, P}),
    (r"\boxed{\prod_{k} 10^{9}}", "x", {P}),
    (r"\boxed{\binom{10^{9}}{3}}", "x", {P}),
    (r"\boxed{" + "9" * 1500 + "}", "9" * 1500, {C}),
    (r"\boxed{" + "9" * 1500 + "}", "9" * 1499 + "8", {P}),
    (r"\boxed{" + "9" * 5000 + "}", "9", {P}),
    (r"\boxed{1e999999999}", "1", {W}),
    (r"\boxed{\frac{1}{0}}", "5", {W}),
    (r"\boxed{\frac{1}{0}}", "x", {W, P}),
    (r"\boxed{__import__('os').system('echo pwned')}", "0", {W}),
    (r"\boxed{__import__('os').system('echo pwned')}", "x", {W, P}),
    (r"\boxed{\text{" + "\x00" * 50 + "}}", "0", {P}),
    ("\x00" * 10_000 + r"\boxed{7}" + "\x00" * 100, "7", {C}),
    (r"\boxed{\\\\\\}", "x", {W, P}),
    (r"\boxed{}}}}{{{", "x", {N, W, P}),
    (r"\boxed{1} " * 5000, "1", {W}),                               # a huge list is not the answer 1
    (r"\boxed{x^{" + "2^{" * 20 + "1" + "}" * 21 + "}", "x", {P}),
    ("\U0001F600" * 1000 + r"\boxed{\pi}", r"\pi", {C}),
    (r"\boxed{\begin{pmatrix}" + "&".join(["1"] * 400) + r"\end{pmatrix}}", "1", {W}),
]


@pytest.fixture(scope="module")
def verifier():
    with Verifier(workers=2, deadline_s=10.0, cache_size=0, warm_up=False) as v:
        yield v


def test_adversarial_table_in_bounded_time(verifier):
    start = time.perf_counter()
    verdicts = verifier.score_batch([r for r, _, _ in ADVERSARIAL], [g for _, g, _ in ADVERSARIAL])
    for (response, gold, allowed), verdict in zip(ADVERSARIAL, verdicts):
        assert verdict.reason in allowed, (response[:80], gold[:40], verdict.reason)
        assert verdict.reward == (1.0 if verdict.reason == C else 0.0)
    for response, gold, allowed in ADVERSARIAL:  # one at a time as well
        assert verifier.score(response, gold).reason in allowed
    assert time.perf_counter() - start < 30.0
    assert verifier.stats()["max_item_s"] < 10.0 + 1.0


def test_nothing_was_executed(verifier, tmp_path):
    marker = tmp_path / "pwned"
    answer = r"\boxed{__import__('pathlib').Path('%s').touch()}" % marker
    for gold in ("0", "x", "y+1"):
        verifier.score(answer, gold)
    assert not marker.exists()


def _alive(pid: int) -> bool:
    """True if ``pid`` still exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_slow_item_times_out_and_pool_recovers():
    with Verifier(workers=1, deadline_s=2.0, cache_size=0) as v:
        assert v.score(r"\boxed{\cot x}", r"\frac{\cos x}{\sin x}").reason == C   # worker up and working
        before = set(v.pool.pids())
        start = time.perf_counter()
        slow = v.score(rf"\boxed{{{SLOW_ANSWER}}}", SLOW_GOLD)
        assert slow.reason == T and slow.reward == 0.0 and slow.answer == SLOW_ANSWER
        assert time.perf_counter() - start < 2.0 + 2.0
        for pid in before:
            assert not _alive(pid), "the timed-out worker must be killed and reaped"
        stats = v.stats()
        assert stats["timeouts"] == 1 and stats["respawns"] == 1
        # The respawned worker keeps grading, in a batch with another slow item in it.
        batch = v.score_batch([r"\boxed{\sin x}", rf"\boxed{{{SLOW_ANSWER}}}", r"\boxed{x^2-1}"],
                              [r"\cot x", SLOW_GOLD + "+0", "(x-1)(x+1)"])
        assert [x.reason for x in batch] == [W, T, C]
        assert v.stats()["timeouts"] == 2
        pids = v.pool.pids()
    for pid in pids:
        assert not _alive(pid)


def test_workers_are_recycled_and_reaped():
    pool = SymbolicPool(workers=1, deadline_s=10.0, max_items=2, warm_up=False)
    pool.start()
    first = pool.pids()
    assert len(first) == 1
    results = pool.run([("x+1", "1+x"), (r"\sin x", r"\cos x")])
    assert [r for r, _ in results] == [C, W]
    assert pool.pids() == []          # retired after 2 items
    assert not _alive(first[0])
    results = pool.run([(r"\cot x", r"\frac{\cos x}{\sin x}")])
    assert results[0][0] == C
    live = pool.pids()
    assert len(live) == 1
    pool.close()
    pool.close()                      # idempotent
    assert not _alive(live[0])
    with pytest.raises(RuntimeError):
        pool.run([("x", "x")])


def test_workers_stopped_at_interpreter_exit(tmp_path):
    """A caller that never closes its Verifier leaves no worker behind."""
    script = tmp_path / "caller.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from onerl.reward import Verifier
        verifier = Verifier(workers=1, deadline_s=60.0, warm_up=False)  # never closed
        verdict = verifier.score(r"\\boxed{{\\cot x}}", r"\\frac{{\\cos x}}{{\\sin x}}")
        print(verdict.reason, *verifier.pool.pids())
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    reason, *pids = out.stdout.split()
    assert reason == C and pids
    time.sleep(0.2)
    for pid in pids:
        assert not _alive(int(pid))
