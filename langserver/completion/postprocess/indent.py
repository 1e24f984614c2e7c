"""Indentation: the document's style, and a completion made to follow it.

The style comes from the editor's formatting options when the server has them
(tabSize / insertSpaces), else it is inferred from the document around the
cursor: tabs or spaces by majority of indented lines, the width by the most
common step between consecutive indentation levels.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass

from langserver.completion.stages.context import Context

DEFAULT_WIDTH = 4
# A line that opens a block: the next line may be one level deeper.
_OPENS_BLOCK = re.compile(r"(:|\{|\(|\[|=>|->|\bthen|\bdo|\\)\s*(#.*|//.*)?$")
_LEADING = re.compile(r"[ \t]*")


@dataclass(frozen=True)
class IndentStyle:
    use_tabs: bool = False
    width: int = DEFAULT_WIDTH  # columns per level (and per tab)

    @property
    def unit(self) -> str:
        return "\t" if self.use_tabs else " " * self.width


def leading(line: str) -> str:
    match = _LEADING.match(line)
    return match.group(0) if match else ""


def columns(whitespace: str, width: int) -> int:
    return len(whitespace.expandtabs(width))


@functools.lru_cache(maxsize=64)
def infer_style(context: Context, tab_size: int | None = None, insert_spaces: bool | None = None) -> IndentStyle:
    """The editor's options win; what they leave open is read from the document.
    (Memoised: several steps ask for the same context's style.)"""
    lines = [line for line in (context.prefix + context.suffix).split("\n") if line.strip()]
    indents = [leading(line) for line in lines]
    tabs = sum(1 for ws in indents if ws.startswith("\t"))
    spaces = sum(1 for ws in indents if ws.startswith(" "))
    use_tabs = (not insert_spaces) if insert_spaces is not None else tabs > spaces
    width = tab_size or _space_width(indents) or DEFAULT_WIDTH
    return IndentStyle(use_tabs=use_tabs, width=width)


def _space_width(indents: list[str]) -> int | None:
    """The most common positive step between consecutive space indentations."""
    steps: Counter[int] = Counter()
    previous = 0
    for ws in indents:
        if "\t" in ws:
            continue
        depth = len(ws)
        if depth > previous and depth - previous in (2, 3, 4, 8):
            steps[depth - previous] += 1
        previous = depth
    return steps.most_common(1)[0][0] if steps else None


def restyle(whitespace: str, style: IndentStyle) -> str:
    """Leading whitespace rewritten in the document's style, keeping its visual depth."""
    if style.use_tabs:
        if " " not in whitespace:
            return whitespace
        depth = columns(whitespace, style.width)
        return "\t" * (depth // style.width) + " " * (depth % style.width)
    if "\t" not in whitespace:
        return whitespace
    return " " * columns(whitespace, style.width)


def max_plausible_indent(context: Context, style: IndentStyle) -> int | None:
    """The deepest column the cursor line can sensibly be indented to: one level past
    the previous non-blank line when that line opens a block, else its own depth."""
    lines = context.prefix.split("\n")[:-1]
    for line in reversed(lines):
        if line.strip():
            depth = columns(leading(line), style.width)
            return depth + style.width if _OPENS_BLOCK.search(line.rstrip()) else depth
    return None
