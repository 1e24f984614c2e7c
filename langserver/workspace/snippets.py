"""Windows of a file and their similarity to the code around the cursor.

Copilot's recipe: a file is cut into windows of about 60 lines, each window is a set
of identifiers, and a window's score is the Jaccard similarity of its set with the
set of the 60 lines around the cursor. The windows of a document are computed once
per version of it (and of a file on disk once per modification), never per keystroke.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass

WINDOW_LINES = 60
# Windows start every this many lines: overlapping, so a definition is never only cut in half.
WINDOW_STEP = 30
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A definition at a line start: `def f`, `async def f`, `class C`, `NAME =` / `NAME: type =` (any indentation,
# so methods count too); other languages' `function f`, `const x`, `type T`, `struct S` and the like.
_DEFINITION = re.compile(
    r"^[ \t]*(?:(?:export[ \t]+)?(?:async[ \t]+)?"
    r"(?:def|class|function|const|let|var|type|interface|struct|enum|fn|func)[ \t]+([A-Za-z_]\w*)"
    r"|([A-Za-z_]\w*)[ \t]*(?::[^=\n]*)?=(?!=))", re.MULTILINE)
# Words every file has: they say nothing about which file is relevant.
_STOP = frozenset(keyword.kwlist) | {
    "self", "cls", "None", "True", "False", "return", "const", "let", "var", "function", "this", "new", "int",
    "str", "bool", "float", "void", "public", "private", "static", "string", "func", "type", "err", "nil",
}


def identifiers(text: str) -> frozenset[str]:
    return frozenset(_IDENTIFIER.findall(text)) - _STOP


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    common = len(a & b)
    return common / (len(a) + len(b) - common)


@dataclass(frozen=True)
class Window:
    start: int  # first line (0-based)
    end: int  # line after the last
    ids: frozenset[str]
    defines: frozenset[str] = frozenset()  # names defined at a line start in it (def, class, assignment)


def split_lines(text: str) -> list[str]:
    """Lines with their breaks (split at "\\n" only, like the context stage)."""
    lines = text.split("\n")
    out = [line + "\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def window(lines: list[str], start: int, end: int) -> Window:
    text = "".join(lines[start:end])
    return Window(start, end, identifiers(text), frozenset(a or b for a, b in _DEFINITION.findall(text)))


def windows(lines: list[str], size: int = WINDOW_LINES, step: int = WINDOW_STEP) -> list[Window]:
    if not lines:
        return []
    starts = list(range(0, max(1, len(lines) - size + step), step))
    return [window(lines, start, min(len(lines), start + size)) for start in starts]


def around(text: str, offset: int, size: int = WINDOW_LINES) -> frozenset[str]:
    """The identifiers of the `size` lines around `offset`, two thirds of them before it (the query)."""
    start = offset
    for _ in range(size * 2 // 3):
        start = text.rfind("\n", 0, start)
        if start <= 0:
            start = 0
            break
    end = offset
    for _ in range(size - size * 2 // 3):
        end = text.find("\n", end + 1)
        if end == -1:
            end = len(text)
            break
    return identifiers(text[start:end])


def window_around(lines: list[str], first: int, last: int, size: int = WINDOW_LINES) -> Window:
    """A window holding lines first..last (an edited range), widened to `size` lines around it."""
    first, last = max(0, min(first, len(lines) - 1)), max(0, min(last, len(lines) - 1))
    if last - first + 1 > size:
        first = max(first, last - size + 1)
    pad = (size - (last - first + 1)) // 2
    start = max(0, first - pad)
    end = min(len(lines), start + size)
    start = max(0, end - size)
    return window(lines, start, end)
