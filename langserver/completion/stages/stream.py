"""Streaming with early stop: read the backend's deltas and close the stream as soon
as the clean-up would cut the text anyway (a full line in single-line mode, the
block end in multi-line mode). Closing the stream closes the HTTP request, so
vLLM stops generating tokens nobody will see.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from langserver.backend.request import Delta, PromptRequest
from langserver.completion.stages.timings import Timings

OpenStream = Callable[[PromptRequest], AsyncIterator[Delta]]

# An opening markdown fence line (Qwen3-Coder issue 543): the clean-up strips it, so the
# early stop must not count its line break as the end of a single-line answer.
_OPENING_FENCE = re.compile(r"^[ \t]*```[\w+#.-]*[ \t]*\r?\n")


def visible_part(raw: str) -> str | None:
    """The part of the raw answer the early-stop check should judge; None = cannot tell yet
    (a fence has started but its line is not finished)."""
    stripped = raw.lstrip()
    if stripped.startswith("`"):
        fence = _OPENING_FENCE.match(stripped)
        if fence is None:
            return None if "\n" not in stripped else raw
        return stripped[fence.end():]
    return raw


@dataclass(frozen=True)
class Answer:
    """What was read of a stream: its pieces (text, token log probabilities, finish
    reason), and whether the early stop closed it before the model's own end."""

    parts: tuple[Delta, ...]
    stopped_early: bool = False

    @property
    def text(self) -> str:
        return "".join(part.text for part in self.parts)

    @property
    def finish_reason(self) -> str | None:
        """"stop" (end token), "length" (max_tokens), "early" (closed by the early stop), or None."""
        if self.stopped_early:
            return "early"
        return self.parts[-1].finish_reason if self.parts else None


async def read_until_complete(deltas: AsyncIterator[Delta], done: Callable[[str], bool],
                              timings: Timings | None = None) -> Answer:
    """Read deltas until `done(visible text)` or the end of the stream; always closes
    the stream. Marks first_token and stream on `timings`."""
    text = ""
    parts: list[Delta] = []
    stopped_early = False
    try:
        async for delta in deltas:
            if not parts and timings is not None:
                timings.mark("first_token")
            parts.append(delta)
            text += delta.text
            visible = visible_part(text)
            if visible is not None and done(visible) and delta.finish_reason is None:
                stopped_early = True
                break
    finally:
        await close_stream(deltas)
    if timings is not None:
        timings.mark("stream" if parts else "first_token")
    return Answer(tuple(parts), stopped_early)


async def read_choices(deltas: AsyncIterator[Delta], n: int, done: Callable[[str], bool],
                       timings: Timings | None = None) -> list[Answer]:
    """`read_until_complete` for a request with `n` answers (Delta.index): the stream is closed
    once every answer is finished or complete. Answers in index order."""
    parts: list[list[Delta]] = [[] for _ in range(n)]
    texts = [""] * n
    finished = [False] * n
    early = [False] * n
    try:
        async for delta in deltas:
            if not any(parts) and timings is not None:
                timings.mark("first_token")
            if not 0 <= delta.index < n or finished[delta.index]:
                continue
            index = delta.index
            parts[index].append(delta)
            texts[index] += delta.text
            visible = visible_part(texts[index])
            if delta.finish_reason is not None:
                finished[index] = True
            elif visible is not None and done(visible):
                finished[index] = early[index] = True
            if all(finished):
                break
    finally:
        await close_stream(deltas)
    if timings is not None:
        timings.mark("stream" if any(parts) else "first_token")
    return [Answer(tuple(answer), stopped) for answer, stopped in zip(parts, early, strict=True)]


async def close_stream(deltas: AsyncIterator[Delta]) -> None:
    close: Any = getattr(deltas, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()
