r"""Plain numbers: exact parsing with :class:`fractions.Fraction` and the numeric comparison rules.

A *plain number* is one of these written forms (on the canonical string of :mod:`.normalize`, so spaces are
already gone and ``\dfrac`` is ``\frac``):

* integer ``1023``, ``-5``, ``+5``, with thousands separators ``10,080`` / ``1,234,567``;
* decimal ``12.80``, ``.5``, ``-0.35625``, ``1,234.5``;
* scientific notation ``4.5e33``, ``4.5E-3``, ``4.5\times10^{33}``, ``4.5\cdot10^{-3}`` (exponent at most
  :data:`MAX_EXPONENT` in size);
* fraction ``\frac{64}{5}``, ``-\frac{3}{8}``, ``\frac{-3}{8}``, ``64/5``;
* mixed number ``1\frac{4}{5}`` (= 9/5, the MATH convention), ``-1\frac{4}{5}``.

An *answer* must also be in canonical form: fractions reduced with a denominator above 1, a mixed number's
fractional part proper and reduced.  ``\frac{24}{2}`` or ``\frac{2}{4}`` are plain numbers but not
canonical, so they never match (the grader wants the simplified value, not an unevaluated division).
Golds are read leniently (any plain form).

Comparison: exact rational equality, except when the gold itself is written as a decimal or in scientific
notation; then the answer may differ by a *relative* :data:`REL_TOL` (gold 0 needs an exact 0).  There is
never a x100 / /100 percentage rescaling.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

REL_TOL = Fraction(1, 10_000)   # relative tolerance for decimal golds
MAX_EXPONENT = 1000             # largest |k| accepted in a x 10^k
MAX_DIGITS = 1000               # longest digit string read as a number

_INT = r"\d+|\d{1,3}(?:,\d{3})+"
_MANTISSA = rf"(?:{_INT})(?:\.\d*)?|\.\d+"

_INT_RE = re.compile(rf"([-+]?)({_INT})")
_DEC_RE = re.compile(rf"([-+]?)((?:{_INT})?)\.(\d*)")
_SCI_RE = re.compile(rf"([-+]?)({_MANTISSA})(?:[eE]|\\times10\^|\\cdot10\^)\{{?([-+]?\d{{1,5}})\}}?")
_FRAC_RE = re.compile(r"([-+]?)\\frac\{([-+]?\d+)\}\{([-+]?\d+)\}")
_SLASH_RE = re.compile(r"([-+]?)(\d+)/(\d+)")
_MIXED_RE = re.compile(r"([-+]?)(\d+)\\frac\{(\d+)\}\{(\d+)\}")
_THOUSANDS_RE = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


@dataclass(frozen=True)
class PlainNumber:
    """A parsed plain number: its exact value, whether it was written as a decimal / in scientific notation,
    and whether the written form is canonical (acceptable as a final answer)."""

    value: Fraction
    decimal: bool
    canonical: bool


def looks_like_thousands(s: str) -> bool:
    """``10,080`` is one number, not the list ``10, 080`` (three-digit groups after every comma)."""
    return _THOUSANDS_RE.fullmatch(s) is not None


def _int(digits: str) -> int:
    return int(digits.replace(",", ""))


def _signed(sign: str, value: Fraction) -> Fraction:
    return -value if sign == "-" else value


def parse_plain_number(s: str) -> PlainNumber | None:
    """Parse ``s`` (canonical form) as a plain number, or return None if it is anything else."""
    if not s or len(s) > MAX_DIGITS + 40 or s.count("\\") > 2:
        return None
    m = _INT_RE.fullmatch(s)
    if m:
        return PlainNumber(_signed(m[1], Fraction(_int(m[2]))), False, True)
    m = _DEC_RE.fullmatch(s)
    if m and (m[2] or m[3]):
        whole = _int(m[2]) if m[2] else 0
        frac = Fraction(int(m[3]), 10 ** len(m[3])) if m[3] else Fraction(0)
        return PlainNumber(_signed(m[1], whole + frac), True, True)
    m = _SCI_RE.fullmatch(s)
    if m:
        exponent = int(m[3])
        if abs(exponent) > MAX_EXPONENT:
            return None
        mantissa = parse_plain_number(m[2])
        if mantissa is None:
            return None
        return PlainNumber(_signed(m[1], mantissa.value * Fraction(10) ** exponent), True, True)
    m = _FRAC_RE.fullmatch(s) or _SLASH_RE.fullmatch(s)
    if m:
        num, den = int(m[2]), int(m[3])
        if den == 0:
            return None
        canonical = den > 1 and math.gcd(num, den) == 1 and not (m[1] == "-" and num < 0)
        return PlainNumber(_signed(m[1], Fraction(num, den)), False, canonical)
    m = _MIXED_RE.fullmatch(s)
    if m:
        whole, num, den = int(m[2]), int(m[3]), int(m[4])
        if den == 0:
            return None
        canonical = 0 < num < den and math.gcd(num, den) == 1
        return PlainNumber(_signed(m[1], whole + Fraction(num, den)), False, canonical)
    return None


def numbers_match(answer: PlainNumber, gold: PlainNumber) -> bool:
    """True iff a canonical ``answer`` has the gold's value (within :data:`REL_TOL` for decimal golds)."""
    if not answer.canonical:
        return False
    if answer.value == gold.value:
        return True
    if not gold.decimal or gold.value == 0:
        return False
    return abs(answer.value - gold.value) <= REL_TOL * abs(gold.value)
