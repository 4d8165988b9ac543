r"""Canonical LaTeX strings: the surface normalisation applied to both the answer and the gold.

Two answers that differ only in presentation get the same canonical string; nothing here changes a value.
The steps, in order:

1. Unicode look-alikes to LaTeX (``−`` ``×`` ``π`` ``√`` ``≤`` ``°`` ...); math delimiters (``$``, ``\(``
   ``\)``, ``\[`` ``\]``), ``\displaystyle``, ``\left`` / ``\right`` / ``\big``-style sizes and spacing
   commands (``\,`` ``\!`` ``\quad`` ``~``) removed; ``{,}`` -> ``,``.
2. Spelling variants: ``\dfrac`` ``\tfrac`` ``\cfrac`` -> ``\frac``, ``\dbinom`` -> ``\binom``, ``\le`` ->
   ``\leq`` (also ``\ge`` ``\ne`` ``\leqslant``), ``\lbrace`` -> ``\{``, ``\varnothing`` and ``\{\}`` ->
   ``\emptyset``, ``\infty`` spellings.
3. Units and decorations: degree marks (``^\circ``, ``\degree``), dollar signs ``\$``, and a trailing unit
   in ``\text{}`` / ``\mbox{}`` / ``\mathrm{}`` (optionally squared or cubed) after a non-empty value are
   dropped, as is a trailing run of plain words after a number (``24 divisors``).  ``\%`` becomes ``%``;
   the percent sign is treated as a unit by the comparison (never as a factor 1/100).
4. List words: ``\text{ and }``, ``\text{ or }``, `` and `` / `` or `` between items and ``\lor`` become
   commas (``x=2 \text{ or } x=3`` is the list ``x=2,x=3``).
5. Text wrappers (``\text`` ``\textbf`` ``\mathrm`` ``\mbox`` ...) and inner ``\boxed{}`` are unwrapped.
6. TeX argument shorthands get braces: ``x^2`` -> ``x^{2}``, ``204_5`` -> ``204_{5}``, ``\sqrt2`` ->
   ``\sqrt{2}``, ``\frac12`` / ``\frac 59`` -> ``\frac{1}{2}`` / ``\frac{5}{9}``.
7. All whitespace is removed, except one space between a command and a following letter (``\pi r``);
   a trailing full stop and redundant outer braces are dropped.

Variable names keep their case; text words are compared case-insensitively later, by :mod:`.equiv`.
"""
from __future__ import annotations

import re
from functools import lru_cache

_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u00d7": r"\times ", "\u00b7": r"\cdot ", "\u22c5": r"\cdot ",
    "\u00f7": r"\div ", "\u03c0": r"\pi ", "\u221e": r"\infty ", "\u221a": r"\sqrt", "\u2264": r"\leq ",
    "\u2265": r"\geq ", "\u2260": r"\neq ", "\u00b0": r"^{\circ}", "\u222a": r"\cup ", "\u2229": r"\cap ",
    "\u2208": r"\in ", "\u00a0": " ", "\u2009": " ", "\u202f": " ",
}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))

_DELIMITERS = re.compile(r"(\\\\)|\$|\\[()\[\]]|\\(?:displaystyle|textstyle|scriptstyle)(?![A-Za-z])")
_SIZERS = re.compile(r"\\(?:left|right)\.|\\(?:left|right|[bB]igg?[lrm]?)(?![A-Za-z])")
_SPACING = re.compile(r"(\\\\)|\\[,;: ]|\\q?quad(?![A-Za-z])|~|\\hspace\*?\{[^{}]*\}")
_RENAMES = [
    (re.compile(r"\\[dtc]frac(?![A-Za-z])"), r"\\frac"),
    (re.compile(r"\\[dt]binom(?![A-Za-z])"), r"\\binom"),
    (re.compile(r"\\(?:le|leqslant)(?![A-Za-z])"), r"\\leq"),
    (re.compile(r"\\(?:ge|geqslant)(?![A-Za-z])"), r"\\geq"),
    (re.compile(r"\\(?:ne)(?![A-Za-z])"), r"\\neq"),
    (re.compile(r"\\lt(?![A-Za-z])"), "<"),
    (re.compile(r"\\gt(?![A-Za-z])"), ">"),
    (re.compile(r"\\lbrace(?![A-Za-z])"), r"\\{"),
    (re.compile(r"\\rbrace(?![A-Za-z])"), r"\\}"),
    (re.compile(r"\\varnothing(?![A-Za-z])|\\\{\s*\\\}"), r"\\emptyset"),
    (re.compile(r"\\infin(?:ity)?(?![A-Za-z])|\\inf(?![A-Za-z])|\binfinity\b"), r"\\infty"),
    (re.compile(r"\\(?:times)(?![A-Za-z])"), r"\\times"),
]
_DEGREES = re.compile(
    r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![A-Za-z])|\\degree(?![A-Za-z])|(?<=[\d}])\s*\\circ(?![A-Za-z])")
_WRAPPERS = r"text|textbf|textit|textrm|textnormal|mbox|mathrm|mathit|mathbf|emph|textsf|mathsf"
_TRAILING_UNIT = re.compile(r"\\(?:%s)\s*\{([^{}]*)\}\s*(?:\^\s*\{?\s*[23]\s*\}?)?\s*$" % _WRAPPERS)
_TRAILING_WORDS = re.compile(
    r"^([-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+|\\frac\{\d+\}\{\d+\})%?)\s+[A-Za-z]{2,}(?:\s+[A-Za-z]{2,}){0,3}\.?$")
_LIST_WORDS = re.compile(
    r"\\(?:%s)\s*\{\s*(?:and|or|,)\s*\}|\\lor(?![A-Za-z])|\s+(?:and|or)\s+" % _WRAPPERS)
_UNWRAP = re.compile(r"\\(?:%s|boxed|fbox)\s*\{([^{}]*)\}" % _WRAPPERS)
_SCRIPT = re.compile(r"([\^_])\s*(\\[A-Za-z]+|[A-Za-z0-9])")
_SPACE = re.compile(r"(\\[A-Za-z]+)?\s+(?=([A-Za-z])?)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ARGUMENT_FIXES = (("\\frac", 2, False), ("\\binom", 2, False), ("\\sqrt", 1, True))


def _group_end(s: str, open_pos: int) -> int:
    """Index of the brace closing the group that opens at ``s[open_pos]``, or -1."""
    depth = 0
    for i in range(open_pos, len(s)):
        if s[i] == "{" and s[i - 1:i] != "\\":
            depth += 1
        elif s[i] == "}" and s[i - 1:i] != "\\":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _fix_args(s: str, command: str, nargs: int, optional: bool = False) -> str:
    """Give every argument of ``\\command`` braces: ``\\frac12`` -> ``\\frac{1}{2}``."""
    out, pos = [], 0
    pattern = re.compile(re.escape(command) + r"(?![A-Za-z])")
    for m in pattern.finditer(s):
        if m.start() < pos:
            continue
        out.append(s[pos:m.end()])
        pos = m.end()
        if optional and pos < len(s) and s[pos] == "[":
            close = s.find("]", pos)
            if close < 0:
                break
            out.append(s[pos:close + 1])
            pos = close + 1
        for _ in range(nargs):
            while pos < len(s) and s[pos] == " ":
                pos += 1
            if pos >= len(s):
                break
            if s[pos] == "{":
                close = _group_end(s, pos)
                if close < 0:
                    break
                out.append(s[pos:close + 1])
                pos = close + 1
                continue
            cmd = re.match(r"\\[A-Za-z]+", s[pos:])
            token = cmd.group() if cmd else s[pos]
            out.append("{" + token + "}")
            pos += len(token)
    out.append(s[pos:])
    return "".join(out)


def _keep_newline(m: re.Match) -> str:
    """Substitution that leaves a LaTeX line break ``\\\\`` (group 1) alone and blanks anything else."""
    return m.group(1) or " "


def _strip_units(s: str) -> str:
    for _ in range(3 if "\\" in s else 0):
        m = _TRAILING_UNIT.search(s)
        if not m:
            break
        prefix = s[:m.start()].rstrip()
        unit = m.group(1).strip()
        if not prefix or prefix[-1] in "=,(+-" or not re.search(r"[A-Za-z%]", unit):
            break
        s = prefix
    m = _TRAILING_WORDS.match(s.strip())
    if m:
        s = m.group(1)
    return s


def _strip_outer_braces(s: str) -> str:
    while len(s) >= 2 and s[0] == "{" and s[-1] == "}":
        depth = 0
        for i, ch in enumerate(s):
            depth += ch == "{"
            depth -= ch == "}"
            if depth == 0 and i < len(s) - 1:
                return s
        s = s[1:-1]
    return s


@lru_cache(maxsize=4096)
def canonical(s: str) -> str:
    """The canonical string of an answer or gold (see the module docstring)."""
    if not s.isascii():
        s = _UNICODE_RE.sub(lambda m: _UNICODE[m.group()], s)
    s = _CONTROL.sub(" ", s)
    command = "\\" in s
    if command:
        s = s.replace("\\$", "")  # a dollar sign, before "$" is read as a math delimiter
    if command or "$" in s:
        s = _DELIMITERS.sub(_keep_newline, s)
    if command:
        s = _SIZERS.sub("", s)
        s = s.replace("\\!", "")
        s = _SPACING.sub(_keep_newline, s)
        for pattern, repl in _RENAMES:
            s = pattern.sub(repl, s)
        if "circ" in s or "degree" in s:
            s = _DEGREES.sub("", s)
        s = s.replace("\\%", "%")
    elif "~" in s:
        s = s.replace("~", " ")
    s = s.replace("{,}", ",")
    s = _strip_units(s.strip())
    if "and" in s or "or" in s:
        s = _LIST_WORDS.sub(",", s)
    if "\\" in s:
        for _ in range(4):
            unwrapped = _UNWRAP.sub(r"\1", s)
            if unwrapped == s:
                break
            s = unwrapped
    if "^" in s or "_" in s:
        s = _SCRIPT.sub(r"\1{\2}", s)
    for command_name, nargs, optional in _ARGUMENT_FIXES:
        if command_name in s:
            s = _fix_args(s, command_name, nargs, optional)
    s = _SPACE.sub(lambda m: (m.group(1) + " ") if m.group(1) and m.group(2) else (m.group(1) or ""), s)
    s = s.strip().rstrip(".").strip()
    if s.endswith("\\\\"):
        s = s[:-2]
    return _strip_outer_braces(s) if s.startswith("{") else s
