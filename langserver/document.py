"""Open documents with LSP's rules for lines and positions.

LSP lines end at \\n, \\r\\n or \\r only (str.splitlines also splits on \\f,
\\u2028 and others, which shifts every position after them), and a position's
character counts code units of the negotiated encoding (UTF-16 from VS Code).
Line starts are found lazily from the edit point on, so a keystroke costs a
string splice, not a rescan of the file.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

_BREAK = re.compile(r"\r\n?|\n")


def _units(text: str, encoding: str) -> int:
    if encoding == "utf-32" or text.isascii():
        return len(text)
    if encoding == "utf-8":
        return len(text.encode("utf-8", "surrogatepass"))
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _index_for_units(line: str, units: int, encoding: str) -> int:
    """Code-point index for a client column; mid-character columns round down."""
    if encoding == "utf-32" or line.isascii():
        return min(units, len(line))
    count = 0
    for index, char in enumerate(line):
        width = _units(char, encoding)
        if count + width > units:
            return index
        count += width
    return len(line)


class TextBuffer:
    def __init__(self, text: str, encoding: str = "utf-16") -> None:
        self.encoding = encoding
        self.text = text
        self._starts: list[int] = [0]
        self._scanned_to = 0  # text[:_scanned_to] has all its line starts in _starts

    def _scan_until(self, line: int) -> None:
        while len(self._starts) <= line and self._scanned_to < len(self.text):
            match = _BREAK.search(self.text, self._scanned_to)
            if match is None:
                self._scanned_to = len(self.text)
                return
            # "\r" at the very end may still become "\r\n" on the next edit; that
            # is handled by _invalidate dropping starts at or after the edit point.
            self._starts.append(match.end())
            self._scanned_to = match.end()

    def _scan_all(self) -> None:
        self._scan_until(1 << 62)

    def _invalidate(self, offset: int) -> None:
        keep = bisect.bisect_left(self._starts, offset)
        del self._starts[max(1, keep):]
        self._scanned_to = self._starts[-1]

    @property
    def line_count(self) -> int:
        self._scan_all()
        return len(self._starts)

    def line_bounds(self, line: int) -> tuple[int, int]:
        """Start and end (before the line break) of a line, as code-point offsets."""
        self._scan_until(line + 1)
        line = min(line, len(self._starts) - 1)
        start = self._starts[line]
        end = self._starts[line + 1] if line + 1 < len(self._starts) else len(self.text)
        while end > start and self.text[end - 1] in "\r\n":
            end -= 1
        return start, end

    def offset_at(self, line: int, character: int) -> int:
        """Offset for a client position, clamped to the document (past-end positions are not errors)."""
        if line < 0:
            return 0
        self._scan_until(line)
        if line >= len(self._starts):
            return len(self.text)
        start, end = self.line_bounds(line)
        return start + _index_for_units(self.text[start:end], max(0, character), self.encoding)

    def position_at(self, offset: int) -> tuple[int, int]:
        offset = max(0, min(offset, len(self.text)))
        while self._scanned_to < offset and self._scanned_to < len(self.text):
            self._scan_until(len(self._starts))
        line = bisect.bisect_right(self._starts, offset) - 1
        start = self._starts[line]
        return line, _units(self.text[start:offset], self.encoding)

    def replace(self, start: tuple[int, int], end: tuple[int, int], new_text: str) -> None:
        begin = self.offset_at(*start)
        finish = max(begin, self.offset_at(*end))
        self.text = self.text[:begin] + new_text + self.text[finish:]
        self._invalidate(begin)

    def set_text(self, text: str) -> None:
        self.text = text
        self._starts = [0]
        self._scanned_to = 0


Position = tuple[int, int]  # (line, character in the negotiated units)


@dataclass(frozen=True)
class Change:
    """One edit of a didChange in plain terms: `text` replaces `start`..`end`; no range
    (None) replaces the whole document."""

    text: str
    start: Position | None = None
    end: Position | None = None

    def lines(self) -> tuple[int, int, int]:
        """First and last line the edit now covers, and the lines it added (negative: removed)."""
        assert self.start is not None and self.end is not None
        first, last = self.start[0], self.end[0]
        added = self.text.count("\n")
        return first, first + added, added - (last - first)
