r"""Safety checks run before any symbolic work.

sympy evaluates eagerly: ``9^{9^{9}}`` or ``(10^{100})!`` would try to build numbers with billions of
digits, and a long enough expression makes ``simplify`` run for minutes.  Before a pair is sent to the
symbolic checker, both canonical strings must pass these checks; a pair that fails is never parsed by
sympy and scores 0 (reason ``parse_error``) unless the two canonical strings are identical.

Refused:

* strings over :data:`MAX_SYMBOLIC_CHARS` characters, or with a digit run over :data:`MAX_DIGITS` digits;
* braces nested deeper than :data:`MAX_NESTING`;
* power towers (an exponent that itself contains ``^``, ``!`` or ``\uparrow``, or a double superscript
  ``9^{9}^{9}``), powers of powers with large exponents, and numeric exponents above
  :data:`MAX_EXPONENT`;
* factorials of numbers above :data:`MAX_FACTORIAL`, of anything containing a power or another factorial,
  and ``\binom`` with a top argument above :data:`MAX_FACTORIAL`;
* commands that ask sympy to *compute* (sums, products, integrals, limits, Knuth arrows);
* more than :data:`MAX_TERMS` operators.

The hard per-item deadline of the worker pool stays in place behind these checks.
"""
from __future__ import annotations

import re

MAX_SYMBOLIC_CHARS = 400
MAX_DIGITS = 1000
MAX_NESTING = 12
MAX_EXPONENT = 10_000
MAX_FACTORIAL = 1000
MAX_TERMS = 120

_COMPUTE = re.compile(
    r"\\(?:sum|prod|coprod|int|iint|iiint|oint|lim|limsup|liminf|uparrow|Uparrow)(?![A-Za-z])")
_LONG_DIGITS = re.compile(r"\d{%d}" % (MAX_DIGITS + 1))
_DOUBLE_SCRIPT = re.compile(r"\^(?:\{[^{}]*\}|\\[A-Za-z]+|[^{\\])\^")
_OPERATORS = re.compile(r"[-+*/^!]|\\(?:cdot|times|div|frac|sqrt)(?![A-Za-z])")


def _group_after(s: str, pos: int) -> str:
    """The TeX argument starting at ``s[pos]``: a braced group's content, a command, or one character."""
    if pos >= len(s):
        return ""
    if s[pos] == "{":
        depth = 0
        for i in range(pos, len(s)):
            depth += s[i] == "{"
            depth -= s[i] == "}"
            if depth == 0:
                return s[pos + 1:i]
        return s[pos + 1:]
    m = re.match(r"\\[A-Za-z]+|\d+|.", s[pos:])
    return m.group() if m else ""


def _group_before(s: str, end: int) -> str:
    """The operand ending just before ``s[end]``: a bracketed group's content, or a run of digits/letters."""
    if end <= 0:
        return ""
    closer = s[end - 1]
    if closer in ")}]":
        opener = {")": "(", "}": "{", "]": "["}[closer]
        depth = 0
        for i in range(end - 1, -1, -1):
            depth += s[i] == closer
            depth -= s[i] == opener
            if depth == 0:
                return s[i + 1:end - 1]
        return s[:end - 1]
    m = re.search(r"[0-9A-Za-z]+$", s[:end])
    return m.group() if m else ""


def _too_big_number(text: str, limit: int) -> bool:
    digits = re.sub(r"\s", "", text)
    return digits.isdigit() and (len(digits) > 6 or int(digits) > limit)


def unsafe_reason(s: str) -> str | None:
    """Why ``s`` must not reach sympy, or None if it may."""
    if len(s) > MAX_SYMBOLIC_CHARS:
        return "too long"
    if _LONG_DIGITS.search(s):
        return "too many digits"
    if _COMPUTE.search(s):
        return "computation command"
    if len(_OPERATORS.findall(s)) > MAX_TERMS:
        return "too many operators"
    depth = 0
    for ch in s:
        depth += ch == "{"
        depth -= ch == "}"
        if depth > MAX_NESTING:
            return "nested too deeply"
    if _DOUBLE_SCRIPT.search(s):
        return "power tower"
    for m in re.finditer(r"\^", s):
        exponent = _group_after(s, m.end())
        if re.search(r"\^|!|\\uparrow", exponent):
            return "power tower"
        if _too_big_number(exponent.lstrip("-+"), MAX_EXPONENT):
            return "huge exponent"
        base = _group_before(s, m.start())
        if "^" in base and re.search(r"\d{3}", exponent):
            return "power of a power"
    for m in re.finditer(r"!", s):
        operand = _group_before(s, m.start())
        if re.search(r"\^|!", operand) or _too_big_number(operand, MAX_FACTORIAL):
            return "huge factorial"
    for m in re.finditer(r"\\binom(?![A-Za-z])", s):
        if _too_big_number(_group_after(s, m.end()), MAX_FACTORIAL) or "^" in _group_after(s, m.end()):
            return "huge binomial"
    return None
