r"""The shape of a canonical answer: a single expression, or a container of them.

Shapes (read from the canonical string of :mod:`.normalize`):

* ``matrix``  ``\begin{pmatrix}..\end{pmatrix}`` (also ``bmatrix``, ``Bmatrix``, ``matrix``, ``array``):
  rows split at ``\\``, cells at ``&``.  Compared by shape, then cell by cell.
* ``tuple``   a bracketed, comma-separated sequence: ordered pairs/tuples ``(8,-2)``, intervals ``(3,4]``,
  ``[-2,7]``.  Compared element by element; the bracket characters must be identical, so an interval's
  open/closed ends are strict: ``[3,4]`` is not ``(3,4]``.
* ``set``     ``\{..\}``, ``\emptyset``, or a bare comma list ``1,-2`` / ``3,5,7`` (how MATH asks for "all
  solutions"): unordered, compared as multisets.  An item containing one ``\pm`` (or ``\mp``) stands for
  its two values: ``1\pm\sqrt{19}`` is the set ``{1+\sqrt{19}, 1-\sqrt{19}}``.
* ``union``   parts joined by ``\cup``: unordered.
* ``atom``    anything else, after redundant outer parentheses are dropped (``(5)`` is ``5``).

A number with thousands separators (``10,080``) is an atom, not a list.  A set or list with one item is
compared as that item.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .numbers import looks_like_thousands

_TOKEN = re.compile(
    r"\\begin\{[A-Za-z*]+\}(?:\{[^{}]*\})?|\\end\{[A-Za-z*]+\}|\\\\|\\[{}]|\\cup(?![A-Za-z])|[()\[\]{},;&]")
_OPENERS = {"(", "[", "{", "\\{"}
_CLOSERS = {")", "]", "}", "\\}"}
_MATRIX = re.compile(r"\\begin\{([pbBvV]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}", re.DOTALL)
_PM = re.compile(r"\\(?:pm|mp)(?![A-Za-z])")
MAX_ITEMS = 256


@dataclass(frozen=True)
class Shape:
    """``kind`` is atom / tuple / set / union / matrix; ``text`` is the atom's string, ``items`` the
    children (strings for tuple and set elements, Shapes for union parts, rows of strings for matrices),
    ``brackets`` the opening and closing characters of a tuple."""

    kind: str
    text: str = ""
    items: tuple = ()
    brackets: str = ""


def split_top(s: str, seps: tuple[str, ...]) -> list[str]:
    """Split ``s`` at separators that are outside every bracket pair (``()``, ``[]``, ``{}``, ``\\{\\}``,
    ``\\begin..\\end``); mixed pairs such as ``(3,4]`` count as brackets too."""
    parts, depth, last = [], 0, 0
    for m in _TOKEN.finditer(s):
        tok = m.group()
        if tok in _OPENERS or tok.startswith("\\begin"):
            depth += 1
        elif tok in _CLOSERS or tok.startswith("\\end"):
            depth -= 1
        elif depth == 0 and tok in seps:
            parts.append(s[last:m.start()])
            last = m.end()
            if len(parts) > MAX_ITEMS:
                break
    parts.append(s[last:])
    return parts


def outer_group(s: str) -> tuple[str, str, str] | None:
    """If the whole of ``s`` is one bracket group, return (opening, inside, closing)."""
    depth = 0
    first = None
    for m in _TOKEN.finditer(s):
        tok = m.group()
        if tok in _OPENERS:
            if first is None:
                if m.start() != 0:
                    return None
                first = m
            depth += 1
        elif tok in _CLOSERS:
            depth -= 1
            if depth == 0:
                if m.end() != len(s) or first is None:
                    return None
                return first.group(), s[first.end():m.start()], tok
        elif tok.startswith("\\begin") or tok.startswith("\\end"):
            depth += 1 if tok.startswith("\\begin") else -1
    return None


def _expand_pm(item: str) -> list[str]:
    marks = _PM.findall(item)
    if len(marks) != 1:
        return [item]
    plus, minus = ("+", "-") if marks[0] == "\\pm" else ("-", "+")
    first, second = _PM.sub(plus, item), _PM.sub(minus, item)
    # "\pm 3" -> "+3" / "-3"; "x=\pm 3" -> "x=+3": a leading plus sign is noise.
    return [first.replace("=+", "=").lstrip("+"), second]


def _unordered(items: list[str]) -> Shape:
    flat: list[str] = []
    for item in items:
        flat.extend(_expand_pm(item))
    return Shape("set", items=tuple(i for i in flat if i))


def shape_of(s: str) -> Shape:
    """Classify the canonical string ``s`` (see the module docstring)."""
    for _ in range(8):  # peel redundant parentheses: ((5)) -> 5
        if s == "\\emptyset":
            return Shape("set")
        if looks_like_thousands(s):
            return Shape("atom", text=s)
        m = _MATRIX.fullmatch(s)
        if m and "\\end{" not in m.group(2):  # one matrix, not a product of two
            if m.group(1).startswith(("v", "V")):
                return Shape("atom", text=s)  # a determinant is a number
            rows = [r for r in split_top(m.group(2), ("\\\\",)) if r.strip()]
            return Shape("matrix", items=tuple(tuple(split_top(r, ("&",))) for r in rows))
        unions = split_top(s, ("\\cup",))
        if len(unions) > 1:
            return Shape("union", items=tuple(shape_of(u) for u in unions))
        items = split_top(s, (",", ";"))
        if len(items) > 1:
            return _unordered(items)
        group = outer_group(s)
        if group is None:
            if len(_PM.findall(s)) == 1:
                return _unordered([s])
            return Shape("atom", text=s)
        opening, inside, closing = group
        if opening == "\\{":
            return _unordered(split_top(inside, (",", ";")))
        inner_items = split_top(inside, (",",))
        if len(inner_items) > 1 and opening in "([" and closing in ")]":
            return Shape("tuple", items=tuple(inner_items), brackets=opening + closing)
        if opening + closing in ("()", "{}"):
            s = inside
            continue
        return Shape("atom", text=s)
    return Shape("atom", text=s)
