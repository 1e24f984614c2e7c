"""Token counting for the context budget.

The budget is in tokens because the model's context is. When the model's
`tokenizer.json` is on this machine (a local model dir, or the Hugging Face
cache for a hub id) it is loaded once, lazily, and counts exactly; otherwise a
character estimate stands in. Counting is per line and memoised: on each
keystroke only the cursor line is new, so a 2,000-token window costs one short
`encode`, never a tokenisation of the whole file.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

# Code averages about 3 characters per token with Qwen's byte-level BPE (more for
# indentation-heavy code, whose space runs merge into one token); 3.0 errs on the
# short side, so an estimated window never overflows the model's context.
CHARS_PER_TOKEN = 3.0
# Memo of line -> token count; cleared when it grows past this (a few MB at most).
LINE_CACHE_LIMIT = 50_000


class TokenCounter(Protocol):
    """Counts tokens of whole lines (each with its line break) and of any text."""

    exact: bool

    def count_lines(self, lines: Iterable[str]) -> list[int]: ...


class CharEstimate:
    """The fallback: tokens = ceil(chars / CHARS_PER_TOKEN)."""

    exact = False

    def __init__(self, chars_per_token: float = CHARS_PER_TOKEN) -> None:
        self.chars_per_token = chars_per_token

    def count_lines(self, lines: Iterable[str]) -> list[int]:
        return [math.ceil(len(line) / self.chars_per_token) for line in lines]


class ModelTokenizer:
    """Exact counts with the model's own `tokenizers.Tokenizer`, memoised per line.

    A window's count is the sum of its lines' counts. Qwen's pre-tokenizer never
    merges across a line break except for runs of blank lines, so the sum is at
    most a token or two per blank line above the true count: the safe side.
    """

    exact = True

    def __init__(self, tokenizer: object) -> None:
        self._tokenizer = tokenizer
        self._memo: dict[str, int] = {}

    def count_lines(self, lines: Iterable[str]) -> list[int]:
        lines = list(lines)
        missing = [line for line in dict.fromkeys(lines) if line not in self._memo]
        if missing:
            if len(self._memo) + len(missing) > LINE_CACHE_LIMIT:
                self._memo.clear()
            encodings = self._tokenizer.encode_batch(missing, add_special_tokens=False)  # type: ignore[attr-defined]
            for line, encoding in zip(missing, encodings, strict=True):
                self._memo[line] = len(encoding.ids)
        return [self._memo[line] for line in lines]


def count_text(counter: TokenCounter, text: str) -> int:
    return sum(counter.count_lines(text.splitlines(keepends=True)))


def tokenizer_file(model_path: str) -> Path | None:
    """Where the model's tokenizer.json is, without touching the network."""
    if not model_path:
        return None
    local = Path(os.path.expanduser(model_path))
    if local.is_dir():
        candidate = local / "tokenizer.json"
        return candidate if candidate.is_file() else None
    if local.suffix == ".json" and local.is_file():
        return local
    try:  # a hub id: only a copy already in the local Hugging Face cache counts
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        cached = try_to_load_from_cache(model_path, "tokenizer.json")
    except Exception:  # invalid repo id and the like: no tokenizer, not an error
        return None
    return Path(cached) if isinstance(cached, str) else None


@functools.lru_cache(maxsize=4)
def counter_for(model_path: str) -> TokenCounter:
    """The model's tokenizer when reachable, else the character estimate (loaded once per path)."""
    path = tokenizer_file(model_path)
    if path is None:
        return CharEstimate()
    try:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:  # a corrupt or foreign file must not stop completions
        log.warning("cannot load %s (%s); estimating tokens from characters", path, err)
        return CharEstimate()
    return ModelTokenizer(tokenizer)
