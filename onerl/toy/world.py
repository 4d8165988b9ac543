"""The toy math world: procedurally generated two-step arithmetic word problems.

Why this exists
---------------
1-shot RLVR needs a base model that already *can* solve the task sometimes but
usually chooses not to.  This module generates such a world, small enough that
a 0.8 M-parameter model pretrained for a few minutes on a CPU lives in it.

Problems
--------
Each of the twelve templates fixes a noun (the "template word": apples,
coins, ...), a container, and two operations (``+`` or ``-``) applied left to
right::

    There are 47 apples in a basket. 8 more apples are put in.
    9 apples are taken out. How many apples are in the basket now?

The starting amount and every running value are two-digit numbers (10..99,
also along paths with dropped carries) and the two changes are 2..9.  This
keeps the column arithmetic learnable by a 0.8 M-parameter model in minutes,
makes every solution line the same length (so the model finds the operands at
fixed offsets), and still more than half of the steps need a carry or a
borrow.  The gold answer is an integer in 10..99.

Solutions (what the pretraining documents teach)
------------------------------------------------
Every solution ends with the line ``answer: \\boxed{N}``, so boxing is
saturated from the start and a format-only reward carries no signal.  There are
three solution *modes*; which one a document uses is drawn from a mixture that
depends on the template (``Template.mix``), so the greedy base model behaves
differently per template:

* **careful** -- each step is written, then followed by a ``recheck:`` line that
  restates the operands and recomputes.  The first attempt carries an injected
  error with probability ``CAREFUL_SLIP`` and the recheck line fixes it; the
  next step continues from the rechecked value.
* **sloppy** -- each step is written once.  Whenever the step needs a carry
  (``+``) or a borrow (``-``) the written result drops it with
  probability ``SLOPPY_ERROR`` (> 0.5, so greedy decoding reproduces the
  error): 47 + 8 = 45, 52 - 7 = 55, 63 - 8 = 65.
* **shortcut** -- no steps, just a guessed answer (the gold answer shifted by
  a nonzero offset; exactly right only with probability ``SHORTCUT_LUCK``).

Arithmetic drills
-----------------
Besides the chat documents, pretraining mixes in plain-text drill rows --
lines of correct arithmetic in the solution-line format (``47 + 8 = 55``)
over the same number ranges, no prompt, no chat tokens, no box.  They stand
in for the arithmetic a real base model saw in pretraining: a short drill line
teaches column arithmetic about ten times more cheaply than a full document,
which is what lets the tiny model learn it in minutes.

Splits
------
A problem's identity is ``template:a,b,c``.  A stable hash of it puts every
problem in one of 100 buckets: held-out problems come from buckets 0-4, the
example pool (candidate 1-shot training examples) from buckets 5-6, and
pretraining documents only from buckets >= 10, so the three never overlap.
Four templates (``Template.in_pool`` False) never appear in the pool, so the
held-out set always contains templates RL never trained on.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
from dataclasses import dataclass

SUFFIX = " Let's think step by step and output the final answer within \\boxed{}."
MODES = ("careful", "sloppy", "shortcut")
CAREFUL_SLIP = 0.35   # P(first attempt of a careful step is wrong)
SLOPPY_ERROR = 0.7    # P(sloppy step drops a needed carry/borrow)
SHORTCUT_LUCK = 0.03  # P(a shortcut guess is exactly right)

HELDOUT_BUCKETS = range(0, 5)
POOL_BUCKETS = range(5, 7)
PRETRAIN_MIN_BUCKET = 10

# Mode mixtures (careful, sloppy, shortcut).  Careful is a real minority everywhere outside the
# careful-leaning templates, but never rare: the mode is decided at one token (``recheck`` or the
# next step after the first line; ``answer`` or a number at the start), so a base pretrained on
# these mixtures sits near that decision on most templates -- greedy picks careful on about a
# fifth of the held-out problems -- and a policy-gradient push towards careful flips many of them.
CAREFUL_LEANING = (0.6, 0.3, 0.1)
SLOPPY_LEANING = (0.35, 0.5, 0.15)
SHORTCUT_LEANING = (0.3, 0.2, 0.5)


@dataclass(frozen=True)
class Template:
    noun: str          # plural template word, e.g. "apples"
    container: str
    ops: tuple         # two of "+", "-"
    mix: tuple         # (careful, sloppy, shortcut) probabilities
    in_pool: bool = True

    @property
    def name(self) -> str:
        return self.noun


TEMPLATES = (
    Template("apples", "basket", ("+", "-"), CAREFUL_LEANING),
    Template("coins", "jar", ("+", "+"), CAREFUL_LEANING),
    Template("books", "shelf", ("-", "+"), CAREFUL_LEANING, in_pool=False),
    Template("pens", "cup", ("-", "-"), CAREFUL_LEANING),
    Template("cards", "box", ("+", "-"), CAREFUL_LEANING),
    Template("stamps", "binder", ("+", "+"), SLOPPY_LEANING),
    Template("shells", "bucket", ("-", "-"), SLOPPY_LEANING, in_pool=False),
    Template("beads", "bag", ("+", "-"), SLOPPY_LEANING),
    Template("marbles", "tin", ("-", "+"), SLOPPY_LEANING),
    Template("eggs", "crate", ("+", "+"), SLOPPY_LEANING),
    Template("stones", "pile", ("-", "+"), SHORTCUT_LEANING, in_pool=False),
    Template("keys", "drawer", ("+", "-"), SHORTCUT_LEANING),
)
TEMPLATE_BY_NAME = {t.name: t for t in TEMPLATES}


# --------------------------------------------------------------------------
# arithmetic: the true result and the systematic "dropped carry" result
# --------------------------------------------------------------------------
def apply_op(x: int, op: str, y: int) -> int:
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    raise ValueError(op)


def _digits(n: int) -> list:
    return [int(d) for d in reversed(str(n))]


def dropped_carry(x: int, op: str, y: int) -> int:
    """The classic column-arithmetic mistake: never carry / never borrow.

    ``+``: each column keeps only its last digit (the top column is written in
    full).  ``-``: each column subtracts the smaller digit from the larger.
    Equals ``apply_op`` when no carry/borrow is needed.
    """
    xs, ys = _digits(x), _digits(y)
    n = max(len(xs), len(ys))
    xs += [0] * (n - len(xs))
    ys += [0] * (n - len(ys))
    if op == "+":
        cols = [a + b if i == n - 1 else (a + b) % 10 for i, (a, b) in enumerate(zip(xs, ys))]
    elif op == "-":
        cols = [abs(a - b) for a, b in zip(xs, ys)]
    else:
        raise ValueError(op)
    return sum(c * 10 ** i for i, c in enumerate(cols))


def needs_carry(x: int, op: str, y: int) -> bool:
    return dropped_carry(x, op, y) != apply_op(x, op, y)


def slip(rng: random.Random, value: int) -> int:
    """A small wrong result for a step that has no carry to drop."""
    while True:
        wrong = value + rng.choice((-10, -1, 1, 10))
        if wrong >= 0:
            return wrong


# --------------------------------------------------------------------------
# problems
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    template: Template
    numbers: tuple     # (a, b, c)

    @property
    def key(self) -> str:
        return f"{self.template.name}:" + ",".join(map(str, self.numbers))

    @property
    def bucket(self) -> int:
        digest = hashlib.blake2b(self.key.encode(), digest_size=8).hexdigest()
        return int(digest, 16) % 100

    def steps(self) -> list:
        """[(x, op, y, result), ...] with the true results."""
        out, value = [], self.numbers[0]
        for op, y in zip(self.template.ops, self.numbers[1:]):
            res = apply_op(value, op, y)
            out.append((value, op, y, res))
            value = res
        return out

    @property
    def answer(self) -> int:
        return self.steps()[-1][3]

    @property
    def text(self) -> str:
        t, (a, b, c) = self.template, self.numbers
        parts = [f"There are {a} {t.noun} in a {t.container}."]
        for op, y in zip(t.ops, (b, c)):
            if op == "+":
                parts.append(f"{y} more {t.noun} are put in.")
            else:
                parts.append(f"{y} {t.noun} are taken out.")
        parts.append(f"How many {t.noun} are in the {t.container} now?")
        return " ".join(parts)

    @property
    def prompt(self) -> str:
        return self.text + SUFFIX


def _two_digit_throughout(problem: Problem) -> bool:
    """True if every running value stays in 10..99, with or without dropped carries."""
    values = {problem.numbers[0]}
    for op, y in zip(problem.template.ops, problem.numbers[1:]):
        values = {f(x, op, y) for x in values for f in (apply_op, dropped_carry)}
        if min(values) < 10 or max(values) > 99:
            return False
    return True


def random_problem(rng: random.Random, template: Template) -> Problem:
    """Uniform over valid operands (two-digit running values on every path)."""
    while True:
        a = rng.randint(10, 99)
        rest = tuple(rng.randint(2, 9) for _ in template.ops)
        prob = Problem(template, (a,) + rest)
        if _two_digit_throughout(prob):
            return prob


def sample_problem(rng: random.Random, template: Template, buckets) -> Problem:
    """Rejection-sample a problem whose split bucket lies in ``buckets``."""
    while True:
        prob = random_problem(rng, template)
        if prob.bucket in buckets:
            return prob


PRETRAIN_BUCKETS = range(PRETRAIN_MIN_BUCKET, 100)


# --------------------------------------------------------------------------
# solutions
# --------------------------------------------------------------------------
def _line(x: int, op: str, y: int, res: int) -> str:
    return f"{x} {op} {y} = {res}"


def solve(problem: Problem, mode: str, rng: random.Random) -> str:
    """A solution text in the given mode (no chat tokens, no trailing newline)."""
    lines = []
    if mode == "shortcut":
        guess = problem.answer
        if rng.random() >= SHORTCUT_LUCK:
            guess = abs(problem.answer + rng.choice([d for d in range(-20, 21) if d]))
        lines.append(f"answer: \\boxed{{{guess}}}")
        return "\n".join(lines)
    value = problem.numbers[0]
    for op, y in zip(problem.template.ops, problem.numbers[1:]):
        true = apply_op(value, op, y)
        if mode == "careful":
            first = true
            if rng.random() < CAREFUL_SLIP:
                first = dropped_carry(value, op, y) if needs_carry(value, op, y) else slip(rng, true)
            lines.append(_line(value, op, y, first))
            lines.append("recheck: " + _line(value, op, y, true))
            value = true
        elif mode == "sloppy":
            res = true
            if needs_carry(value, op, y) and rng.random() < SLOPPY_ERROR:
                res = dropped_carry(value, op, y)
            lines.append(_line(value, op, y, res))
            value = res
        else:
            raise ValueError(mode)
    lines.append(f"answer: \\boxed{{{value}}}")
    return "\n".join(lines)


def sample_mode(rng: random.Random, template: Template) -> str:
    return rng.choices(MODES, weights=template.mix)[0]


def pretrain_examples(seed: int):
    """Endless deterministic stream of (problem, mode, solution) for pretraining.

    Templates are uniform; only problems from the pretraining buckets occur.
    """
    rng = random.Random(seed)
    while True:
        template = rng.choice(TEMPLATES)
        prob = sample_problem(rng, template, PRETRAIN_BUCKETS)
        mode = sample_mode(rng, template)
        yield prob, mode, solve(prob, mode, rng)


def drill_text(rng: random.Random, lines: int = 9) -> str:
    """``lines`` random, correct arithmetic lines ``x op y = z`` (no chat format)."""
    out = []
    for _ in range(lines):
        x, op, y = rng.randint(12, 97), rng.choice("+-"), rng.randint(2, 9)
        out.append(_line(x, op, y, apply_op(x, op, y)))
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# fixed sets: the held-out test set and the example pool, as JSONL rows
# --------------------------------------------------------------------------
def balanced_problems(n: int, templates, buckets, seed: int) -> list:
    """``n`` distinct problems, templates cycled round-robin, deterministic."""
    rng = random.Random(seed)
    seen, out = set(), []
    while len(out) < n:
        template = templates[len(out) % len(templates)]
        prob = sample_problem(rng, template, buckets)
        if prob.key not in seen:
            seen.add(prob.key)
            out.append(prob)
    return out


def to_row(problem: Problem, row_id: str) -> dict:
    """A JSONL row shaped like the real data (plus toy-only fields)."""
    return {
        "id": row_id,
        "problem": problem.text,
        "answer": str(problem.answer),
        "prompt": problem.prompt,
        "template": problem.template.name,
    }


def example_pool(n: int = 64, seed: int = 1) -> list:
    """Rows for ``n`` candidate 1-shot training examples (pool templates only)."""
    templates = [t for t in TEMPLATES if t.in_pool]
    probs = balanced_problems(n, templates, POOL_BUCKETS, seed)
    return [to_row(p, f"toy-pool-{i:03d}") for i, p in enumerate(probs)]


def heldout_problems(n: int = 400, seed: int = 0) -> list:
    """The held-out test problems: all twelve templates, balanced."""
    return balanced_problems(n, TEMPLATES, HELDOUT_BUCKETS, seed)


def heldout_set(n: int = 400, seed: int = 0) -> list:
    """Rows of the held-out test set (ids ``toy-test-NNN``)."""
    return [to_row(p, f"toy-test-{i:03d}") for i, p in enumerate(heldout_problems(n, seed))]


def write_jsonl(rows, path: str) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def read_jsonl(path: str) -> list:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def parse_problem(text: str) -> Problem:
    """Inverse of ``Problem.text`` (accepts the prompt too)."""
    nums = tuple(int(x) for x in re.findall(r"\d+", text.replace(SUFFIX, ""))[:3])
    for t in TEMPLATES:
        if f" {t.noun} in a {t.container}." in text:
            return Problem(t, nums)
    raise ValueError(f"not a toy problem: {text[:60]!r}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m onerl.toy.world",
        description="Write toy data as JSONL rows (id, problem, answer, prompt, template).")
    ap.add_argument("what", choices=("pool", "heldout", "example"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=None, help="rows (pool: 64, heldout: 400)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--id", help="pool id for 'example', e.g. toy-pool-000")
    args = ap.parse_args(argv)
    if args.what == "heldout":
        rows = heldout_set(args.n or 400, 0 if args.seed is None else args.seed)
    else:
        rows = example_pool(args.n or 64, 1 if args.seed is None else args.seed)
        if args.what == "example":
            rows = [r for r in rows if r["id"] == args.id]
            if not rows:
                ap.error(f"no pool example with id {args.id!r}")
    write_jsonl(rows, args.out)
    print(f"wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
