r"""When is an answer equivalent to the gold?  The grading rules, applied to canonical strings.

The same function runs in two places: in the calling process with no symbolic checker (it decides most
pairs in microseconds and raises :class:`NeedSymbolic` for the rest), and in a worker process with the
sympy-based checker of :mod:`.symbolic` plugged in.  Rules, in order:

1. Equal canonical strings are equivalent.
2. A leading simple left-hand side is dropped from either side: ``x=5`` ~ ``5``, ``y=2x+3`` ~ ``2x+3``,
   ``f(x)=2x`` ~ ``2x``, ``x\in[-2,7]`` ~ ``[-2,7]``.  If both sides have one, they must be the same
   (case-sensitive): ``x=5`` is not ``y=5``.
3. A trailing ``%`` is a unit and is dropped from both sides; values are never rescaled by 100, so gold
   ``10`` accepts ``10\%`` and gold ``0.5`` rejects ``50\%``.
4. Multiple-choice golds ``(C)`` / ``\text{(C)}`` accept the same letter as ``C``, ``(C)``, ``\textbf{(C)}``
   (any case).  Text golds (letters only, such as ``Evelyn``, ``even``, ``east``) accept the same words,
   case-insensitively; nothing else.
5. Containers (see :mod:`.structure`) must have the same kind and size: tuples and intervals element by
   element with identical brackets, sets and lists as multisets, matrices cell by cell.
6. A gold that is a *plain number* (see :mod:`.numbers`) accepts only a plain, canonical number with the
   same value: ``12.8`` accepts ``12.80``, ``\frac{64}{5}``, ``64/5``; rejects ``12.7``; ``1023`` rejects
   ``2^{10}-1`` and ``\frac{2046}{2}``; ``12`` rejects ``3 \cdot 4``.  An unevaluated expression that
   restates the computation is not a final answer.  Numeric tolerance exists only for decimal golds and is
   relative (1e-4).
7. A gold written in a base (``204_5``) accepts the same digits with the same base or no base.
8. Any other gold (closed forms such as ``\frac{3\sqrt{3}}{4}`` or ``12\pi``, polynomials, equations,
   inequalities): the answer must be mathematically equal.  Evaluation (:mod:`.approx`: exact arithmetic
   at random points for rational expressions, float fingerprints for radicals and ``\pi``) settles the
   clear cases; the rest goes to the symbolic checker (math-verify on sympy), where decimals in the answer
   are read as exact rationals, so a rounded decimal never equals an irrational gold.  Symbol names are
   case-sensitive (``3R^2`` is not ``3r^2``).  An equation or inequality never equals a bare expression.
   Equivalent but less simplified closed forms (``\sqrt{20}`` for ``2\sqrt{5}``, ``n(n+1)`` for
   ``n^2+n``) are accepted here: only plain-number golds demand a plain answer.
"""
from __future__ import annotations

import re
from typing import Callable

from .approx import EXACT, FLOAT, MODULAR, close, evaluate
from .numbers import numbers_match, parse_plain_number
from .structure import Shape, shape_of

SymbolicCheck = Callable[[str, str], bool]
SAME_REL = 1e-12                 # constants this close (and a simple answer): equal
DIFFERENT_REL = 1e-6             # float fingerprints further apart than this: different expressions
DIFFERENT_CONSTANTS_REL = 1e-9   # the same for two constants (few operations, tiny rounding error)


class NeedSymbolic(Exception):
    """Raised by :func:`equivalent` when the pair needs the symbolic checker and none was given."""


_ASSIGN_LHS = re.compile(r"(?:[A-Za-z](?:_\{\w+\})?'*|\\[A-Za-z]+|[A-Za-z]\([A-Za-z]\)|\([A-Za-z](?:,[A-Za-z])+\))")
_CHOICE_GOLD = re.compile(r"\(([A-Ea-e])\)")
_CHOICE_ANSWER = re.compile(r"\(?([A-Ea-e])\)?")
_WORDS = re.compile(r"[A-Za-z]+")
_BASE = re.compile(r"(?=[0-9A-F]*\d)([0-9A-F]+)_\{(\d{1,2})\}", re.IGNORECASE)
_RELATION = re.compile(r"=|<|>|\\[lg]eq(?![A-Za-z])|\\neq(?![A-Za-z])")


def split_assignment(s: str) -> tuple[str | None, str]:
    """``x=5`` -> ("x", "5"); ``x\\in[-2,7]`` -> ("x", "[-2,7]"); anything else -> (None, s)."""
    for op in ("=", "\\in"):
        if op not in s:
            continue
        lhs, rhs = s.split(op, 1)
        if op == "\\in" and rhs[:1].isalpha():
            continue  # "\int", "\infty": not the membership sign
        if _ASSIGN_LHS.fullmatch(lhs) and rhs and not _RELATION.search(rhs):
            return lhs, rhs
    return None, s


def _is_text(s: str) -> bool:
    letters = sum(ch.isalpha() for ch in s)
    return _WORDS.fullmatch(s) is not None and (letters >= 3 or s.lower() in ("no", "yes"))


def _text_key(s: str) -> str:
    return re.sub(r"[^a-z]", "", s.lower())


def equivalent(answer: str, gold: str, symbolic: SymbolicCheck | None = None) -> bool:
    """Is the canonical ``answer`` equivalent to the canonical ``gold``?  Raises :class:`NeedSymbolic`
    when the decision needs ``symbolic`` and it is None."""
    return _equal(answer, gold, symbolic, 0)


def _equal(a: str, g: str, symbolic: SymbolicCheck | None, depth: int) -> bool:
    if a == g:
        return True
    if depth > 6:
        raise NeedSymbolic if symbolic is None else ValueError("answer nested too deeply")
    la, a = split_assignment(a)
    lg, g = split_assignment(g)
    if la is not None and lg is not None and la != lg:
        return False
    a, g = a.removesuffix("%"), g.removesuffix("%")
    if a == g:
        return True
    m = _CHOICE_GOLD.fullmatch(g)
    if m:
        ma = _CHOICE_ANSWER.fullmatch(a)
        return ma is not None and ma.group(1).upper() == m.group(1).upper()
    if _is_text(g):
        return _is_text(a) and _text_key(a) == _text_key(g)
    ga, gg = shape_of(a), shape_of(g)
    return _equal_shapes(ga, gg, symbolic, depth + 1)


def _equal_shapes(a: Shape, g: Shape, symbolic: SymbolicCheck | None, depth: int) -> bool:
    # A one-item set or list is compared as its item.
    if a.kind == "set" and len(a.items) == 1 and g.kind == "atom":
        return _equal(a.items[0], g.text, symbolic, depth)
    if g.kind == "set" and len(g.items) == 1 and a.kind == "atom":
        return _equal(a.text, g.items[0], symbolic, depth)
    if a.kind != g.kind:
        return False
    if g.kind == "atom":
        return _equal_atoms(a.text, g.text, symbolic)
    if g.kind == "tuple":
        return a.brackets == g.brackets and len(a.items) == len(g.items) and _all_equal(
            zip(a.items, g.items), symbolic, depth)
    if g.kind == "matrix":
        return [len(r) for r in a.items] == [len(r) for r in g.items] and _all_equal(
            ((x, y) for ra, rg in zip(a.items, g.items) for x, y in zip(ra, rg)), symbolic, depth)
    if g.kind == "set":
        return _multiset_equal(list(a.items), list(g.items), lambda x, y: _equal(x, y, symbolic, depth))
    if g.kind == "union":
        return _multiset_equal(list(a.items), list(g.items),
                               lambda x, y: _equal_shapes(x, y, symbolic, depth + 1))
    return False


def _all_equal(pairs, symbolic: SymbolicCheck | None, depth: int) -> bool:
    """Element-wise equality that prefers a definite "no" over asking for the symbolic checker."""
    pending = None
    for x, y in pairs:
        try:
            if not _equal(x, y, symbolic, depth):
                return False
        except NeedSymbolic as exc:
            pending = exc
    if pending is not None:
        raise pending
    return True


def _multiset_equal(answer: list, gold: list, eq: Callable) -> bool:
    if len(answer) != len(gold):
        return False
    remaining = list(answer)
    for g in gold:
        pending = None
        for i, a in enumerate(remaining):
            try:
                if eq(a, g):
                    del remaining[i]
                    break
            except NeedSymbolic as exc:
                pending = exc
        else:
            if pending is not None:
                raise pending
            return False
    return True


def _equal_atoms(a: str, g: str, symbolic: SymbolicCheck | None) -> bool:
    if a == g:
        return True
    gold_number = parse_plain_number(g)
    if gold_number is not None:
        answer_number = parse_plain_number(a)
        return answer_number is not None and numbers_match(answer_number, gold_number)
    m = _BASE.fullmatch(g)
    if m:
        ma = _BASE.fullmatch(a)
        digits, base = (ma.group(1), ma.group(2)) if ma else (a, m.group(2))
        return base == m.group(2) and digits.upper() == m.group(1).upper()
    if bool(_RELATION.search(a)) != bool(_RELATION.search(g)):
        return False  # an equation or inequality never equals a bare expression
    decided = _evaluated_equal(a, g)
    if decided is not None:
        return decided
    if symbolic is None:
        raise NeedSymbolic
    return symbolic(a, g)


def _evaluated_equal(a: str, g: str) -> bool | None:
    """Decide by evaluation (see :mod:`.approx`), or None when evaluation cannot tell."""
    ma, mg = evaluate(a, MODULAR), evaluate(g, MODULAR)
    if ma is not None and mg is not None:
        if ma.constant and mg.constant:
            ea, eg = evaluate(a, EXACT), evaluate(g, EXACT)
            return None if ea is None or eg is None else ea.value == eg.value
        if ma.value != mg.value:
            return False
        ma, mg = evaluate(a, MODULAR, point=1), evaluate(g, MODULAR, point=1)
        return None if ma is None or mg is None else ma.value == mg.value
    fa, fg = evaluate(a, FLOAT), evaluate(g, FLOAT)
    if fa is None or fg is None:
        return None
    constants = fa.constant and fg.constant
    if not close(fa.value, fg.value, DIFFERENT_CONSTANTS_REL if constants else DIFFERENT_REL):
        return False
    if fa.simple and fg.constant and close(fa.value, fg.value, SAME_REL):
        return True
    return None
