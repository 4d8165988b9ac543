r"""Evaluating simple LaTeX expressions at points, for fast decisions without sympy.

A small recursive-descent parser (our own tokenizer; nothing is ever passed to ``eval``) evaluates a
canonical expression built from numbers, ``+ - \cdot \times / \div``, implicit multiplication, parentheses
and braces, ``^{..}``, ``\frac{..}{..}``, ``\sqrt{..}`` / ``\sqrt[n]{..}``, ``\pi``, the imaginary unit
``i`` and single latin-letter variables (not ``e``).  Anything else (functions, subscripts, relations,
factorials, ``f(x)``-style calls, an integer glued to ``\frac`` which may be a mixed number...) gives
``None`` and the pair goes to the symbolic checker.

Three arithmetics:

* **modular** (integers modulo the prime 2^61-1): for expressions with variables and without ``\sqrt``,
  ``\pi`` or ``i``.  Variables take fixed pseudo-random residues; two rational functions that agree at two
  independent random points are equal (Schwartz-Zippel: a false "equal" has probability about
  degree/2^61 per point), and one disagreement proves them different.  Decimals are exact rationals, as in
  the symbolic checker.
* **exact** (:class:`fractions.Fraction`): the same expressions without variables, compared exactly.
* **float** (``complex`` when ``i`` occurs): a fingerprint for radicals and ``\pi``.  It refuses whatever
  could make a float misleading (exponents above :data:`MAX_POWER`, non-finite values, roots of negative
  numbers, additions that cancel most of their digits such as ``\sqrt{10^{20}+1}-10^{10}``).  :mod:`.equiv`
  trusts it to say "different" when fingerprints are far apart, and "same" only when they agree to ~1e-12,
  both sides are constants and the answer is made of short literals without a decimal point (so
  ``4.4721359549995`` is never taken for ``2\sqrt{5}``).

Precedence follows the symbolic checker's LaTeX grammar: juxtaposition binds tighter than ``/`` and
``\div`` (``1/2x`` is ``1/(2x)``).  A latin letter directly followed by ``(`` is read as a product
(``n(n+1)``), except for the usual function names ``f g h p q`` (either case) and a single parenthesised
token (``a(2)``, ``x(y)``), which the grammar reads as function calls: those are refused.
"""
from __future__ import annotations

import cmath
import math
import random
import re
from dataclasses import dataclass
from fractions import Fraction

MAX_POWER = 64
_CANCEL = 1e-9
_MAX_BITS = 100_000  # largest numerator/denominator (in bits) of an exact intermediate value
_TOKEN = re.compile(r"\d+\.\d*|\.\d+|\d+|\\[A-Za-z]+|[A-Za-z]|[-+*/^(){}\[\]]|\S")
_LETTERS = "abcdfghjklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_FLOAT_VARIABLES = {c: 0.6180339887 + 0.1732050808 * k + 0.0141421356 * k * k
                    for k, c in enumerate(_LETTERS, start=1)}
PRIME = 2**61 - 1
_MODULAR_POINTS = [{c: rng.randrange(2, PRIME) for c in _LETTERS} for rng in (random.Random(1), random.Random(2))]
_FUNCTION_NAMES = set("fghpqFGHPQ")
MODULAR, EXACT, FLOAT = "modular", "exact", "float"
_MUL = {"*", "\\cdot", "\\times"}
_DIV = {"/", "\\div"}


class _Refuse(Exception):
    pass


@dataclass(frozen=True)
class Evaluation:
    """The value of an expression at one point; ``constant``: no variables; ``simple``: constant, no decimal
    point and every literal at most 6 digits."""

    value: object
    constant: bool
    simple: bool


class _Parser:
    def __init__(self, s: str, mode: str, variables: dict):
        self.toks = _TOKEN.findall(s)
        self.pos = 0
        self.mode = mode
        self.exact = mode == EXACT
        self.modular = mode == MODULAR
        self.values = variables
        self.used_variables = False
        self.long_literal = False
        self.decimal = False

    def peek(self) -> str | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise _Refuse
        self.pos += 1
        return tok

    def check(self, value):
        if self.modular:
            return value
        if self.exact:
            if max(value.numerator.bit_length(), value.denominator.bit_length()) > _MAX_BITS:
                raise _Refuse
        elif not cmath.isfinite(value):
            raise _Refuse
        return value

    def expr(self):
        value = self.term()
        while self.peek() in ("+", "-"):
            sign = 1 if self.take() == "+" else -1
            right = self.term()
            if self.modular:
                value = (value + sign * right) % PRIME
                continue
            total = value + sign * right
            if not self.exact and abs(total) < _CANCEL * max(abs(value), abs(right)):
                raise _Refuse  # catastrophic cancellation: the float result means little
            value = total
        return value

    def term(self):
        """Explicit products and quotients of juxtaposed products: ``x/2y`` is ``x/(2y)``, as in the
        LaTeX grammar of the symbolic checker."""
        value = self.juxtaposed()
        while self.peek() in _MUL or self.peek() in _DIV:
            tok = self.take()
            right = self.juxtaposed()
            value = self.check(self.divide(value, right) if tok in _DIV else self.multiply(value, right))
        return value

    def juxtaposed(self):
        value = self.unary()
        while self.peek() is not None and self.starts_atom(self.peek()):
            value = self.check(self.multiply(value, self.power()))
        return value

    def multiply(self, x, y):
        return x * y % PRIME if self.modular else x * y

    def divide(self, x, y):
        if y == 0:
            raise _Refuse
        return x * pow(y, PRIME - 2, PRIME) % PRIME if self.modular else x / y

    def unary(self):
        if self.peek() in ("+", "-"):
            if self.take() == "-":
                value = self.unary()
                return (-value) % PRIME if self.modular else -value
            return self.unary()
        return self.power()

    @staticmethod
    def starts_atom(tok: str) -> bool:
        return tok[0].isdigit() or tok[0] == "." or tok in ("(", "{", "\\frac", "\\sqrt", "\\pi") or (
            len(tok) == 1 and tok.isalpha())

    def power(self):
        base = self.atom()
        if self.peek() != "^":
            return base
        self.take()
        exponent = self.group() if self.peek() == "{" else self.atom()
        if self.modular:
            # Only small integer exponents: a residue near 0 or near PRIME (negative).
            e = exponent if exponent <= MAX_POWER else exponent - PRIME
            if not -MAX_POWER <= e <= MAX_POWER or (base == 0 and e < 0):
                raise _Refuse
            return pow(base, e, PRIME) if e >= 0 else pow(pow(base, PRIME - 2, PRIME), -e, PRIME)
        if isinstance(exponent, complex) or abs(exponent) > MAX_POWER or (base == 0 and exponent < 0):
            raise _Refuse
        if self.exact:
            bits = max(base.numerator.bit_length(), base.denominator.bit_length())
            if exponent.denominator != 1 or bits * abs(int(exponent)) > _MAX_BITS:
                raise _Refuse
            return base ** int(exponent)
        if isinstance(base, complex) or base < 0:
            if exponent != int(exponent):
                raise _Refuse
            exponent = int(exponent)
        try:
            return self.check(base ** exponent)
        except (OverflowError, ZeroDivisionError):
            raise _Refuse from None

    def group(self):
        self.take("{")
        value = self.expr()
        self.take("}")
        return value

    def atom(self):
        tok = self.take()
        if tok[0].isdigit() or tok[0] == ".":
            self.decimal = self.decimal or "." in tok
            self.long_literal = self.long_literal or len(tok.replace(".", "")) > 6
            if len(tok) > 300 or self.peek() == "\\frac":
                raise _Refuse  # "2\frac{1}{2}" may be a mixed number: leave it to the full checker
            if self.modular:
                whole, _, decimals = tok.partition(".")
                if not decimals:
                    return int(whole or "0") % PRIME
                return int(whole + decimals) * pow(10 ** len(decimals), PRIME - 2, PRIME) % PRIME
            return Fraction(tok) if self.exact else float(tok)
        if tok == "(":
            value = self.expr()
            self.take(")")
            return value
        if tok == "{":
            self.pos -= 1
            return self.group()
        if tok == "\\frac":
            num = self.group()
            return self.divide(num, self.group())
        if self.mode != FLOAT and tok in ("\\pi", "\\sqrt", "i"):
            raise _Refuse
        if tok == "\\pi":
            return math.pi
        if tok == "i":
            return 1j
        if tok == "\\sqrt":
            return self.root()
        if len(tok) == 1 and tok in _LETTERS:
            if self.peek() == "(" and (tok in _FUNCTION_NAMES or self.toks[self.pos + 2:self.pos + 3] == [")"]):
                raise _Refuse  # f(x), a(2): a function call, not a product; the symbolic checker decides
            self.used_variables = True
            if self.exact:
                raise _Refuse  # exact mode is for constants
            return self.values[tok]
        raise _Refuse

    def root(self):
        index = 2
        if self.peek() == "[":
            self.take("[")
            index = self.expr()
            self.take("]")
            if isinstance(index, complex) or index != int(index) or not 2 <= index <= MAX_POWER:
                raise _Refuse
        radicand = self.group()
        if isinstance(radicand, complex) or radicand < 0:
            raise _Refuse
        return radicand ** (1.0 / int(index))


def evaluate(s: str, mode: str, point: int = 0) -> Evaluation | None:
    """Value of the canonical expression ``s`` in arithmetic ``mode`` (``modular``, ``exact`` or ``float``),
    variables set to evaluation point ``point`` (0 or 1; modular mode only), or None if unsupported."""
    if not s or len(s) > 400:
        return None
    parser = _Parser(s, mode, _MODULAR_POINTS[point] if mode == MODULAR else _FLOAT_VARIABLES)
    try:
        value = parser.expr()
        if parser.peek() is not None:
            return None
        parser.check(value)
    except (_Refuse, RecursionError, OverflowError, ValueError, ZeroDivisionError, TypeError):
        return None
    constant = not parser.used_variables
    return Evaluation(value, constant, constant and not parser.decimal and not parser.long_literal)


def close(a, b, rel: float) -> bool:
    """|a - b| <= rel * max(|a|, |b|) (both zero counts as close)."""
    return abs(a - b) <= rel * max(abs(a), abs(b))
