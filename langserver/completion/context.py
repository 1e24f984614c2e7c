"""Stage 1: prefix and suffix around the cursor, cut to a budget.

Works on a plain str and a code-point offset; the server has already turned
the client's (UTF-16) position into that offset.
"""

from __future__ import annotations

from dataclasses import dataclass

# Code is about 3 characters per token for Qwen's tokenizer; a character budget
# derived from it errs on the safe (shorter) side for typical source.
CHARS_PER_TOKEN = 3.0
PREFIX_SHARE = 0.75
# The prefix window's start moves in steps of this share of its budget, so that
# consecutive keystrokes send byte-identical leading text (vLLM prefix cache).
WINDOW_STEP_SHARE = 0.125


@dataclass(frozen=True)
class Budget:
    prefix_chars: int
    suffix_chars: int

    @property
    def total(self) -> int:
        return self.prefix_chars + self.suffix_chars

    @classmethod
    def from_chars(cls, total: int) -> Budget:
        prefix = int(total * PREFIX_SHARE)
        return cls(prefix_chars=prefix, suffix_chars=total - prefix)

    @classmethod
    def from_tokens(cls, tokens: int, chars_per_token: float = CHARS_PER_TOKEN) -> Budget:
        return cls.from_chars(max(1, int(tokens * chars_per_token)))


@dataclass(frozen=True)
class Context:
    prefix: str
    suffix: str
    language: str = ""

    @property
    def line_prefix(self) -> str:
        """The already-typed part of the cursor line."""
        return self.prefix.rsplit("\n", 1)[-1]

    @property
    def line_suffix(self) -> str:
        """Text right of the cursor on its line (without the line break)."""
        line = self.suffix.split("\n", 1)[0]
        return line[:-1] if line.endswith("\r") else line


def build_context(text: str, offset: int, budget: Budget, language: str = "") -> Context:
    offset = max(0, min(offset, len(text)))
    start = _prefix_start(text, offset, budget.prefix_chars)
    end = _suffix_end(text, offset, budget.suffix_chars)
    return Context(prefix=text[start:offset], suffix=text[offset:end], language=language)


def _prefix_start(text: str, offset: int, budget: int) -> int:
    if offset <= budget:
        return 0
    lowest = offset - budget
    step = max(1, int(budget * WINDOW_STEP_SHARE))
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
    """Never split a CRLF pair (the str holds code points, so surrogates cannot split)."""
    if 0 < index < len(text) and text[index - 1] == "\r" and text[index] == "\n":
        return index + 1
    return index
