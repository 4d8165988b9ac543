r"""The symbolic checker: math-verify's comparison on sympy objects parsed from LaTeX.

Runs only inside the worker processes of :mod:`.pool` (it can be slow, and the pool enforces a hard
deadline).  How a pair of canonical atoms is compared:

* Both strings are parsed by latex2sympy2_extended (math-verify's LaTeX front end: an ANTLR grammar, no
  ``eval``) after math-verify's own LaTeX clean-up (``basic_latex`` and ``malformed_operators``; units and
  boxes were handled earlier).  Two settings differ from ``math_verify.parse``:

  - symbol names keep their case (``lowercase_symbols=False``), so ``R`` and ``r`` are different;
  - number tokens are converted by our own code instead of ``sympy.Number(text)`` (which would call
    ``sympify`` on the token), and a whole string that is a plain number never reaches the grammar:
    integers exactly, decimals to exact rationals.  A decimal in the answer is therefore never "close
    enough" to an irrational gold.

  math-verify's ``ExprExtractionConfig`` path (``parse_expr`` on plain text) is never used.
* When either side contains a standalone ``i`` the pair is read over the complex numbers, with ``i`` the
  imaginary unit on both sides.
* Plain expressions that take clearly different values at a random positive point are unequal (a quick
  check that spares ``simplify``; it can only ever say "different", which ``simplify`` would confirm).
* Otherwise the parsed objects are compared with ``math_verify.verify`` (string form, then structural and symbolic
  equality through ``sympy.simplify``, relations and sets handled by math-verify), with math-verify's own
  signal-based timeout disabled: the pool's process deadline replaces it.

Anything that fails to parse raises :class:`Unparseable` (reported as ``parse_error``).
"""
from __future__ import annotations

import cmath
import logging
import re
from fractions import Fraction
from functools import lru_cache

import sympy
from latex2sympy2_extended.latex2sympy2 import ConversionConfig, _Latex2Sympy
from latex2sympy2_extended.math_normalization import NormalizationConfig, normalize_latex
from math_verify import verify

from .numbers import parse_plain_number

logging.getLogger("math_verify").setLevel(logging.ERROR)  # silence "timeout is disabled"

_NORMALIZATION = NormalizationConfig(basic_latex=True, units=False, malformed_operators=True, nits=False,
                                     boxed="none", equations=False)
_CONVERSION = ConversionConfig(interpret_as_mixed_fractions=True, interpret_simple_eq_as_assignment=False,
                               interpret_contains_as_eq=True, lowercase_symbols=False)
_NUMBER = re.compile(r"(\d[\d,]*)?(?:\.(\d*))?")
_IMAGINARY = re.compile(r"(?<![A-Za-z\\])i(?![A-Za-z])")
# Two evaluation points for the quick inequality test: positive, irregular rationals.
_POINTS = [[sympy.Rational(1 + 7 * k, 13) + sympy.Rational(1, 17 + k) for k in range(8)],
           [sympy.Rational(5 + 3 * k, 11) + sympy.Rational(2, 19 + k) for k in range(8)]]


class Unparseable(Exception):
    """The LaTeX could not be turned into a sympy object."""


class _Converter(_Latex2Sympy):
    """latex2sympy's converter with number tokens read without ``sympify``."""

    def parse_number(self, text: str):  # noqa: D401 - overrides the library method
        text = text.replace(",", "").strip()
        mantissa, _, exponent = text.lower().partition("e")
        m = _NUMBER.fullmatch(mantissa)
        if not m or not (m.group(1) or m.group(2)):
            raise Unparseable(f"bad number token {text[:40]!r}")
        value = Fraction(int(m.group(1) or "0"))
        if m.group(2):
            value += Fraction(int(m.group(2)), 10 ** len(m.group(2)))
        if exponent:
            if not re.fullmatch(r"[-+]?\d{1,4}", exponent) or abs(int(exponent)) > 1000:
                raise Unparseable("exponent out of range")
            value *= Fraction(10) ** int(exponent)
        return sympy.Rational(value.numerator, value.denominator)


@lru_cache(maxsize=1024)
def to_sympy(latex: str, complex_numbers: bool):
    """Parse one canonical LaTeX atom."""
    plain = parse_plain_number(latex)
    if plain is not None:  # also keeps latex2sympy's own number reader (``sympy.Number(str)``) out of the way
        return sympy.Rational(plain.value.numerator, plain.value.denominator)
    text = normalize_latex(latex, _NORMALIZATION)
    converter = _Converter(None, not complex_numbers, False, config=_CONVERSION)
    try:
        expr = converter.parse(text)
    except Unparseable:
        raise
    except Exception as exc:  # the ANTLR grammar and the converter raise many kinds
        raise Unparseable(str(exc)[:200]) from None
    if complex_numbers:
        imaginary = {s: sympy.I for s in getattr(expr, "free_symbols", ()) if s.name == "i"}
        if imaginary:
            expr = expr.xreplace(imaginary)
    return expr


def _clearly_different(a, b) -> bool:
    """True when two plain expressions take different values at a random point.

    ``simplify`` preserves values, so two expressions that differ at one admissible point can never be
    proven equal: math-verify would answer "no" after a much slower search.  Only plain expressions
    (no relations, sets, matrices, bare symbols) are tested; any doubt returns False.
    """
    if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)) or a.is_Symbol or b.is_Symbol:
        return False
    try:
        symbols = sorted((a.free_symbols | b.free_symbols), key=lambda x: x.name)
        for point in _POINTS:
            values = {sym: point[i % len(point)] for i, sym in enumerate(symbols)}
            va = complex(a.evalf(30, subs=values))
            vb = complex(b.evalf(30, subs=values))
            if not (cmath.isfinite(va) and cmath.isfinite(vb)):
                return False
            if abs(va - vb) > 1e-9 * max(1.0, abs(va), abs(vb)):
                return True
    except Exception:  # noqa: BLE001 - anything odd: leave the decision to math-verify
        return False
    return False


def symbolic_equal(answer: str, gold: str) -> bool:
    """Are two canonical atoms mathematically equal (math-verify's judgement, case-sensitive symbols)?"""
    complex_numbers = bool(_IMAGINARY.search(answer) or _IMAGINARY.search(gold))
    gold_expr = to_sympy(gold, complex_numbers)
    answer_expr = to_sympy(answer, complex_numbers)
    if _clearly_different(answer_expr, gold_expr):
        return False
    return bool(verify(gold_expr, answer_expr, float_rounding=6, numeric_precision=15, strict=True,
                       timeout_seconds=None, raise_on_error=False))
