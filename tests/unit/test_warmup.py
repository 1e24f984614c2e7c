"""Prefix warm-up unit tests: which places get a warm-up, and that a warm-up prefills the
very head the next requests in that place start with."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from hypothesis import given
from hypothesis import strategies as st

from langserver.backend.request import Delta, PromptRequest
from langserver.completion.serving.scheduler import DocumentScheduler, TypingRate
from langserver.completion.serving.warmup import MIN_HEAD_CHARS, SLACK_CHARS, Warmer, prompt_head
from langserver.completion.stages.context import Context
from langserver.completion.stages.prompt import Sampling, build_prompt, warm_prompt

LINE = "    total_{} = compute(values, weights)  # a line of ordinary code\n"
FILE = "".join(LINE.format(number) for number in range(8 * MIN_HEAD_CHARS // len(LINE)))


class Backend:
    """Stands in for vLLM's stream: records the prompts, answers one token, or fails."""

    def __init__(self, fail: bool = False) -> None:
        self.prompts: list[PromptRequest] = []
        self.fail = fail

    async def __call__(self, prompt: PromptRequest) -> AsyncIterator[Delta]:
        self.prompts.append(prompt)
        if self.fail:
            raise ConnectionError("vLLM is not ready")
        yield Delta("x")


def request_at(offset: int, text: str = FILE, fmt: str = "chat-fim") -> tuple[PromptRequest, PromptRequest]:
    """(the completion's prompt, its warm-up) with the cursor at `offset`."""
    context = Context(prefix=text[:offset], suffix=text[offset:offset + 400])
    return build_prompt(context, fmt, Sampling(max_tokens=32)), warm_prompt(context, fmt)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_new_place_gets_one_warm_up_and_typing_on_in_it_gets_none() -> None:
    backend = Backend()
    warmer = Warmer(backend)
    cursor = 2 * MIN_HEAD_CHARS + 10
    assert warmer.warm(request_at(cursor)[1])
    for typed in range(1, 40):  # the rest of the line, then the next lines
        assert not warmer.warm(request_at(cursor + typed)[1])
    await settle()
    assert len(backend.prompts) == 1 and warmer.sent == 1
    assert backend.prompts[0].body["max_tokens"] == 1
    # A few lines further on, still within the slack: warm.
    assert not warmer.warm(request_at(cursor + SLACK_CHARS // 2)[1])
    # Far on (the user typed a screenful without any request reaching vLLM): cold again.
    assert warmer.warm(request_at(cursor + SLACK_CHARS + 2 * len(LINE))[1])


async def test_another_region_or_a_moved_window_is_cold_and_going_back_is_warm() -> None:
    warmer = Warmer(Backend())
    assert warmer.warm(request_at(3 * MIN_HEAD_CHARS)[1])
    # The prefix window moved a step: the head no longer starts where the cached one does.
    moved = FILE[len(LINE) * 4:]
    assert warmer.warm(request_at(3 * MIN_HEAD_CHARS, moved)[1])
    # Back up the file inside the first head: all of it is cached.
    assert not warmer.warm(request_at(2 * MIN_HEAD_CHARS)[1])
    await settle()


async def test_a_short_head_is_never_worth_a_warm_up() -> None:
    warmer = Warmer(Backend())
    assert not warmer.warm(request_at(MIN_HEAD_CHARS // 2)[1])
    assert warmer.sent == 0


async def test_a_head_a_completion_already_streamed_from_is_warm() -> None:
    backend = Backend()
    warmer = Warmer(backend)
    stream = warmer.watch(backend)
    prompt, warm = request_at(2 * MIN_HEAD_CHARS)
    assert [delta async for delta in stream(prompt)] == [Delta("x")]
    assert not warmer.warm(warm)
    assert len(backend.prompts) == 1  # the completion only


async def test_a_failed_warm_up_is_tried_again_at_the_next_wait() -> None:
    backend = Backend(fail=True)
    warmer = Warmer(backend)
    warm = request_at(2 * MIN_HEAD_CHARS)[1]
    assert warmer.warm(warm)
    await settle()
    backend.fail = False
    assert warmer.warm(warm)
    await settle()
    assert len(backend.prompts) == 2


async def test_forget_makes_every_place_cold_again() -> None:
    warmer = Warmer(Backend())
    warm = request_at(2 * MIN_HEAD_CHARS)[1]
    assert warmer.warm(warm)
    warmer.forget()  # a new vLLM: its prefix cache is empty
    assert warmer.warm(warm)
    await settle()


@given(prefix=st.text(st.sampled_from("ab \n\t:()"), max_size=200), suffix=st.text(max_size=50),
       fmt=st.sampled_from(["chat-fim", "raw-fim"]))
def test_the_warm_up_starts_with_the_same_text_as_the_completion_prompt(prefix: str, suffix: str, fmt: str) -> None:
    context = Context(prefix=prefix, suffix=suffix)
    real, warm = build_prompt(context, fmt, Sampling()), warm_prompt(context, fmt)
    assert prompt_head(real) == prompt_head(warm)
    head = prefix[:prefix.rfind("\n") + 1]
    assert prompt_head(real).endswith(head)
    assert warm.body["max_tokens"] == 1


async def test_the_scheduler_calls_on_wait_only_when_it_waits() -> None:
    rate = TypingRate()
    scheduler = DocumentScheduler(rate=rate)
    waits: list[int] = []

    async def job() -> str:
        return "done"

    await scheduler.run(job, 0, on_wait=lambda: waits.append(0))
    assert waits == []
    await scheduler.run(job, 20, on_wait=lambda: waits.append(20))
    assert waits == [20]
    # Adaptive right after Enter answers at once: nothing to warm ahead of.
    rate.intervals.extend([0.1, 0.1])
    await scheduler.run(job, -1, line_start=True, on_wait=lambda: waits.append(-1))
    assert waits == [20]
