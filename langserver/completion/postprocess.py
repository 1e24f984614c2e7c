"""Stage 4: turn the model's raw answer into text that can be inserted at the cursor.

Each step is a small function `str -> str` (given the context); `clean` runs
them in order. An empty result means "show nothing".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from langserver.completion.context import Context
from langserver.completion.prompt import STOP_TOKENS

_FENCE = re.compile(r"^\s*```[\w+#.-]*[ \t]*\r?\n(?P<body>.*?)(?:\r?\n)?```\s*$", re.DOTALL)
_SPECIAL = re.compile("|".join(re.escape(token) for token in (*STOP_TOKENS, "<|im_start|>")))


@dataclass(frozen=True)
class Completion:
    text: str
    # Characters right of the cursor, on its line, that the completion replaces.
    replace_chars: int = 0


Step = Callable[[str, Context], str]


def strip_special_tokens(text: str, context: Context) -> str:
    """Cut at the first leaked Qwen token: whatever follows it is not the middle."""
    match = _SPECIAL.search(text)
    return text if match is None else text[: match.start()]


def strip_fence(text: str, context: Context) -> str:
    """Unwrap a markdown fence the chat model put around its answer (Qwen3-Coder issue 543)."""
    match = _FENCE.match(text)
    return text if match is None else match.group("body")


STEPS: tuple[Step, ...] = (strip_special_tokens, strip_fence)


def clean(raw: str, context: Context, steps: tuple[Step, ...] = STEPS) -> Completion | None:
    text = raw
    for step in steps:
        text = step(text, context)
    if not text.strip():
        return None
    return Completion(text=text)
