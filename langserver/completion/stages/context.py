"""Stage 1: prefix and suffix around the cursor, cut to a budget.

Works on a plain str and a code-point offset; the server has already turned
the client's (UTF-16) position into that offset.

The budget is in tokens when a `TokenCounter` is given (the model's own
tokenizer, see `tokens.py`), else in characters. Either way:
- the prefix gets 87.5 % and the suffix 12.5 % (the suffix follows the cursor, so
  vLLM's prefix cache can never reuse it: scripts/bench-typing measured 55 % of
  prompt tokens cached at 75/25, 66 % at 87.5/12.5), and a side that needs less
  than its share (start or end of the file) leaves the rest to the other; the
  slack the prefix window's coarse steps leave mid-file stays unused;
- cuts fall on line boundaries (inside a line only when the cursor line alone
  is over budget), never inside a CRLF or a surrogate pair;
- the prefix window's start moves in coarse steps, and not while the cursor line
  is typed, so consecutive keystrokes send byte-identical leading text and vLLM's
  prefix cache stays hot.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass

from langserver.completion.stages.tokens import CHARS_PER_TOKEN, TokenCounter

PREFIX_SHARE = 0.875
# The prefix window's start moves in steps of this share of its (nominal) budget,
# so that consecutive keystrokes send byte-identical leading text (vLLM prefix cache).
WINDOW_STEP_SHARE = 0.125
# With a real tokenizer the window may hold more characters than the estimate says
# (indentation runs are one token); candidate windows are searched up to this ratio.
MAX_CHARS_PER_TOKEN = 6.0
# The partly typed cursor line counts as this many tokens, or a multiple (see _fit_prefix).
CURSOR_LINE_GRAIN = 64


@dataclass(frozen=True)
class Budget:
    prefix_chars: int
    suffix_chars: int
    # Token limits; 0 = none (character budget only).
    prefix_tokens: int = 0
    suffix_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prefix_chars + self.suffix_chars

    @property
    def total_tokens(self) -> int:
        return self.prefix_tokens + self.suffix_tokens

    @property
    def step(self) -> int:
        """The prefix window's step: fixed by the nominal budget, not by what is left over."""
        return max(1, int(self.prefix_chars * WINDOW_STEP_SHARE))

    @classmethod
    def from_chars(cls, total: int) -> Budget:
        prefix = int(total * PREFIX_SHARE)
        return cls(prefix_chars=prefix, suffix_chars=total - prefix)

    @classmethod
    def from_tokens(cls, tokens: int, chars_per_token: float = CHARS_PER_TOKEN) -> Budget:
        chars = cls.from_chars(max(1, int(tokens * chars_per_token)))
        prefix_tokens = int(tokens * PREFIX_SHARE)
        return cls(chars.prefix_chars, chars.suffix_chars, prefix_tokens, max(0, tokens - prefix_tokens))


@dataclass(frozen=True)
class RepoContext:
    """Code from other files of the workspace (langserver/workspace), for Qwen's repository layout."""
    name: str  # the workspace folder's name
    path: str  # the current file, relative to the folder
    files: tuple[tuple[str, str], ...]  # (relative path, content), in prompt order


@dataclass(frozen=True)
class Context:
    prefix: str
    suffix: str
    language: str = ""
    repo: RepoContext | None = None  # None: the current file alone (today's prompt)

    @property
    def line_prefix(self) -> str:
        """The already-typed part of the cursor line."""
        return self.prefix.rsplit("\n", 1)[-1]

    @property
    def line_suffix(self) -> str:
        """Text right of the cursor on its line (without the line break)."""
        line = self.suffix.split("\n", 1)[0]
        return line[:-1] if line.endswith("\r") else line


def build_context(text: str, offset: int, budget: Budget, language: str = "",
                  counter: TokenCounter | None = None) -> Context:
    offset = max(0, min(offset, len(text)))
    if counter is not None and budget.prefix_tokens > 0:
        start, end = _token_window(text, offset, budget, counter)
    else:
        start, end = _char_window(text, offset, budget)
    return Context(prefix=text[start:offset], suffix=text[offset:end], language=language)


def _char_window(text: str, offset: int, budget: Budget) -> tuple[int, int]:
    # A side shorter than its share gives the rest to the other side.
    prefix_budget = budget.prefix_chars + max(0, budget.suffix_chars - (len(text) - offset))
    suffix_budget = budget.suffix_chars + max(0, budget.prefix_chars - offset)
    start = _prefix_start(text, offset, prefix_budget, budget.step)
    return start, _suffix_end(text, offset, suffix_budget)


def _prefix_start(text: str, offset: int, budget: int, step: int | None = None) -> int:
    if offset <= budget:
        return 0
    lowest = offset - budget
    step = step or max(1, int(budget * WINDOW_STEP_SHARE))
    # Round up to a step boundary: the start only moves after `step` more characters.
    stepped = min(offset, -(-lowest // step) * step)
    line_start = text.find("\n", stepped - 1, offset)
    if line_start == -1:
        # The cursor line alone is longer than the budget: cut inside it.
        return _safe_cut(text, stepped)
    return line_start + 1


def _suffix_end(text: str, offset: int, budget: int) -> int:
    if len(text) - offset <= budget:
        return len(text)
    limit = offset + budget
    line_end = text.rfind("\n", offset, limit)
    if line_end == -1:
        return _safe_cut(text, limit)
    return line_end + 1


def _safe_cut(text: str, index: int) -> int:
    """Move a cut off the middle of a CRLF or of a (lone, client-made) UTF-16 surrogate pair."""
    if 0 < index < len(text):
        before, after = text[index - 1], text[index]
        if (before == "\r" and after == "\n") or ("\ud800" <= before <= "\udbff" and "\udc00" <= after <= "\udfff"):
            return index + 1
    return index


# --- token budget ------------------------------------------------------------------------


def _token_window(text: str, offset: int, budget: Budget, counter: TokenCounter) -> tuple[int, int]:
    total = budget.total_tokens
    end, suffix_used = _fit_suffix(text, offset, budget.suffix_tokens, counter)
    start, prefix_used = _fit_prefix(text, offset, total - suffix_used, budget.step, counter)
    # Only the start of the file leaves the suffix the rest. Mid-file the slack is the window's
    # coarse step, and text after the cursor is never reused by vLLM's prefix cache: handing it
    # to the suffix made prompts 13 % longer, all of it uncacheable (scripts/bench-typing,
    # no debounce: 73 % of prompt tokens cached before, 82 % after).
    if start == 0 and prefix_used < budget.prefix_tokens:
        end, _ = _fit_suffix(text, offset, total - prefix_used, counter)
    return start, end


def _fit_prefix(text: str, offset: int, tokens: int, step: int, counter: TokenCounter) -> tuple[int, int]:
    """The earliest allowed start whose window fits `tokens`. Allowed starts are the line
    starts at or after each multiple of `step` (the character budget's grid), so the
    window still moves in coarse steps while the user types."""
    first = max(0, -(-(offset - int(tokens * MAX_CHARS_PER_TOKEN)) // step) * step)
    widest = _grid_start(text, offset, first, step)
    starts, counts = _lines_from(text, widest, offset, counter)
    allowance = 0  # for an empty cursor line, counted as used so the suffix does not grow and shrink
    if tokens >= 4 * CURSOR_LINE_GRAIN:
        # The cursor line, being typed: its count goes up and down as BPE merges the last
        # characters, and the window would jump back and forth between two starts (each jump
        # a full prefix-cache miss). It counts as a fixed allowance instead (whole grains when
        # longer), empty or not, so the window moves as lines are finished, not as one is typed.
        if counts and offset > 0 and text[offset - 1] != "\n":
            counts[-1] = max(CURSOR_LINE_GRAIN, -(-counts[-1] // CURSOR_LINE_GRAIN) * CURSOR_LINE_GRAIN)
        else:
            allowance = CURSOR_LINE_GRAIN
            tokens -= allowance
    # remaining[i] = tokens from starts[i] to the cursor
    remaining = [*itertools.accumulate(reversed(counts))][::-1]
    for point in range(first, offset + 1, step):
        start = _grid_start(text, offset, point, step)
        index = bisect.bisect_left(starts, start)
        if index < len(starts) and starts[index] == start and remaining[index] <= tokens:
            return start, remaining[index] + allowance
    # Even the cursor line is over budget: cut inside it by the character estimate.
    start = _prefix_start(text, offset, int(tokens * CHARS_PER_TOKEN), step)
    return start, tokens


def _grid_start(text: str, offset: int, point: int, step: int) -> int:
    """The window start for grid point `point` (a multiple of `step`)."""
    return 0 if point <= 0 else _prefix_start(text, offset, offset - point, step)


def _fit_suffix(text: str, offset: int, tokens: int, counter: TokenCounter) -> tuple[int, int]:
    """The latest line end whose window fits `tokens`."""
    widest = _suffix_end(text, offset, int(tokens * MAX_CHARS_PER_TOKEN))
    starts, counts = _lines_from(text, offset, widest, counter)
    used = 0
    end = offset
    for index, count in enumerate(counts):
        if used + count > tokens:
            break
        used += count
        end = starts[index + 1] if index + 1 < len(starts) else widest
    if end == offset and widest > offset and counts and counts[0] > tokens:
        # The rest of the cursor line alone is over budget: cut inside it.
        end = _suffix_end(text, offset, int(tokens * CHARS_PER_TOKEN))
        used = tokens
    return end, used


def _lines_from(text: str, start: int, end: int, counter: TokenCounter) -> tuple[list[int], list[int]]:
    """Start offsets and token counts of the lines (split at "\n" only) of text[start:end]."""
    lines = [line + "\n" for line in text[start:end].split("\n")]
    lines[-1] = lines[-1][:-1]
    if not lines[-1]:
        lines.pop()
    if not lines:
        return [], []
    starts = [*itertools.accumulate((len(line) for line in lines[:-1]), initial=start)]
    return starts, counter.count_lines(lines)
