r"""Finding the final answer in a model response.

Rules (the same in both modes unless noted):

* Only the response is read, never the prompt.  The caller passes the generated text; as a safety net, if
  the text still contains a chat-template assistant header (``<|im_start|>assistant``, ``<｜Assistant｜>``),
  everything up to the last such header is dropped.
* Reasoning models: when the response contains ``</think>``, only the text after the *last* ``</think>`` is
  read.  A response that opens ``<think>`` and never closes it was cut off while reasoning: no answer.
* Only a bounded tail of the text is scanned (:data:`TAIL_CHARS` characters), so a 100k-character response
  costs the same as a short one.
* The answer is the content of the **last** ``\boxed{...}`` / ``\fbox{...}`` (brace-balanced, nested braces
  allowed, ``\{`` / ``\}`` are literal braces).  ``\boxed 5`` (no braces) reads up to the next space or ``$``.
* The content is capped: more than :data:`MAX_ANSWER_CHARS` characters or braces nested deeper than
  :data:`MAX_DEPTH` make the box unreadable (``parse_error``), as does a box that is never closed (a
  truncated response) or control characters such as NUL inside it.  An empty last box means no answer.
* Several boxes separated only by list separators (``,`` ``;`` ``and`` ``&``, math delimiters, spacing) form
  one answer, joined with commas: ``\boxed{2} and \boxed{3}`` reads as ``2, 3``.  Boxes separated by ``or``
  are a hedge and score 0 (status ``hedged``).  Anything else between two boxes ends the group, so earlier
  intermediate boxes do not count.
* Training mode: no box means no answer.  Eval mode additionally accepts, when there is no box, an explicit
  final-answer line: ``final answer is X`` / ``the answer is X`` / a line starting with ``Answer: X``.  It
  never falls back to the last number in the text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

TAIL_CHARS = 8192          # how much of the end of the response is scanned
MAX_ANSWER_CHARS = 2000    # longest box content accepted
MAX_DEPTH = 32             # deepest brace nesting accepted inside a box
MAX_GROUP = 16             # most boxes joined into one list answer
_MAX_GAP = 48              # longest text between two boxes of one list

OK, NO_ANSWER, PARSE_ERROR, HEDGED = "ok", "no_answer", "parse_error", "hedged"

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BRACE_TOKEN = re.compile(r"\\[\\{}]|[{}]")
_UNBRACED = re.compile(r"[^\s$]{1,200}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ASSISTANT_HEADERS = ("<|im_start|>assistant", "<｜Assistant｜>")

# Text allowed between two boxes of one list answer, once these pieces are removed.
_GAP_NOISE = re.compile(r"\\text\{\s*|\\mbox\{\s*|\\(?:quad|qquad|[,;:! ()\[\]])|\\\\|[\s$,;&{}.]")
_EVAL_PATTERNS = (
    re.compile(r"final answer is\s*:?\s*(.+)", re.IGNORECASE),
    re.compile(r"the answer is\s*:?\s*(.+)", re.IGNORECASE),
    re.compile(r"^\W{0,4}answer\W{0,4}:\s*(.+)", re.IGNORECASE | re.MULTILINE),
)


@dataclass(frozen=True)
class Extraction:
    """What :func:`extract_answer` found: ``status`` is one of ``ok`` / ``no_answer`` / ``parse_error`` /
    ``hedged``; ``answer`` is the answer text for ``ok`` (and the joined alternatives for ``hedged``)."""

    status: str
    answer: str | None = None


def response_tail(response: str) -> str | None:
    """The part of the response that may hold the final answer, or None if reasoning never finished."""
    for header in _ASSISTANT_HEADERS:
        cut = response.rfind(header)
        if cut >= 0:
            response = response[cut + len(header):]
    cut = response.rfind("</think>")
    if cut >= 0:
        response = response[cut + len("</think>"):]
    elif "<think>" in response:
        return None
    return response[-TAIL_CHARS:]


def _read_braced(text: str, open_pos: int) -> tuple[str | None, int, str]:
    """Read the group opening at ``text[open_pos] == '{'``: (content, end position, status)."""
    window_end = min(len(text), open_pos + MAX_ANSWER_CHARS + 2)
    depth = 0
    for tok in _BRACE_TOKEN.finditer(text, open_pos, window_end):
        t = tok.group()
        if t == "{":
            depth += 1
            if depth > MAX_DEPTH:
                return None, tok.end(), PARSE_ERROR
        elif t == "}":
            depth -= 1
            if depth == 0:
                return text[open_pos + 1:tok.start()], tok.end(), OK
    # Never closed: either the text ended (truncated response) or the content is over the length cap.
    return None, window_end, PARSE_ERROR


def _read_box(text: str, start: int) -> tuple[str | None, int, str]:
    """Read the box whose command starts at ``start``: (content, end, status).

    Status ``no_answer`` means the command has no argument at all (prose such as "put it in \\boxed").
    """
    pos = start + (6 if text.startswith("\\boxed", start) else 5)
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    if pos < len(text) and text[pos] == "{":
        return _read_braced(text, pos)
    m = _UNBRACED.match(text, pos)
    if m is None or not m.group().rstrip(".,;"):
        return None, pos, NO_ANSWER
    return m.group().rstrip(".,;"), m.end(), OK


def _gap_kind(gap: str) -> str:
    """How two neighbouring boxes are related: 'list', 'hedge' or 'separate'."""
    if len(gap) > _MAX_GAP:
        return "separate"
    words = _GAP_NOISE.sub(" ", gap).split()
    if not words or all(w.lower() == "and" for w in words):
        return "list"
    if all(w.lower() in ("or", "and") for w in words):
        return "hedge"
    return "separate"


def _boxed_answer(tail: str) -> Extraction | None:
    """The answer from the last box (or group of boxes) of ``tail``; None if there is no box at all."""
    starts = [m.start() for m in _BOX.finditer(tail)]
    group: list[tuple[int, str]] = []     # (start, content), last box first
    joined_by_or = False
    for start in reversed(starts):
        if len(group) >= MAX_GROUP:
            break
        content, end, status = _read_box(tail, start)
        if status == NO_ANSWER:  # a bare mention of the command, not a box
            continue
        if not group:
            if status != OK:
                return Extraction(status)
            group.append((start, content))
            continue
        if end > group[-1][0]:
            # This box contains the ones read before it (``\boxed{\boxed{5}}``): the outer one wins.
            if status != OK:
                break
            group = [(s, c) for s, c in group if s >= end] + [(start, content)]
            continue
        kind = "separate" if status != OK else _gap_kind(tail[end:group[-1][0]])
        if kind == "separate":
            break
        joined_by_or = joined_by_or or kind == "hedge"
        group.append((start, content))
    if not group:
        return None
    parts = [_unwrap_box(c.strip()) for _, c in reversed(group)]
    if any(_CONTROL.search(p) for p in parts):
        return Extraction(PARSE_ERROR)
    parts = [p for p in parts if p]
    if not parts:
        return Extraction(NO_ANSWER)
    if joined_by_or:
        return Extraction(HEDGED, " \\text{ or } ".join(parts))
    return Extraction(OK, ", ".join(parts))


def _unwrap_box(content: str) -> str:
    """``\\boxed{\\boxed{5}}`` -> ``5`` (one level at a time, bounded by the depth cap)."""
    for _ in range(MAX_DEPTH):
        m = _BOX.match(content)
        if not m:
            return content
        inner, end, status = _read_box(content, 0)
        if status != OK or content[end:].strip():
            return content
        content = inner.strip()
    return content


def _final_answer_line(tail: str) -> Extraction | None:
    best = None
    for pattern in _EVAL_PATTERNS:
        for m in pattern.finditer(tail):
            if best is None or m.start() > best.start():
                best = m
    if best is None:
        return None
    line = best.group(1).strip(" \t*:")
    math = re.match(r"\$+([^$]{1,%d})\$+" % MAX_ANSWER_CHARS, line)
    if math:
        line = math.group(1)
    else:
        line = re.split(r"\.\s|\.$", line, maxsplit=1)[0]
    line = line.strip().rstrip(".").strip()
    if not line or len(line) > MAX_ANSWER_CHARS:
        return Extraction(NO_ANSWER if not line else PARSE_ERROR)
    if _CONTROL.search(line):
        return Extraction(PARSE_ERROR)
    return Extraction(OK, line)


def extract_answer(response: str, mode: str = "train") -> Extraction:
    """Find the final answer of ``response`` (see the module docstring for the rules)."""
    tail = response_tail(response)
    if tail is None:
        return Extraction(NO_ANSWER)
    found = _boxed_answer(tail)
    if found is not None:
        return found
    if mode == "eval":
        found = _final_answer_line(tail)
        if found is not None:
            return found
    return Extraction(NO_ANSWER)
