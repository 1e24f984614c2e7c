"""Explicit requests (issue 27, item 3): up to N different completions from ONE request asking
for `n` answers, cleaned up, duplicates after the clean-up dropped, the likeliest first, and the
stream closed once every answer is complete. Recorded interleaved answers, as vLLM streams
`n` choices; no model."""

from __future__ import annotations

from collections.abc import AsyncIterator

from langserver.backend.request import Delta, PromptRequest
from langserver.completion import pipeline
from langserver.settings import Settings

TEXT = "def area(r):\n    return \n\nprint(area(2))\n"
OFFSET = TEXT.index("return ") + len("return ")


class Interleaved:
    """An OpenStream for `n` choices: token-sized deltas of each, interleaved; records the body."""

    def __init__(self, answers: list[list[tuple[str, float]]], tail: int = 20) -> None:
        self.answers = answers
        self.tail = tail  # more tokens after each answer's line, which the early stop never reads
        self.read = 0
        self.bodies: list[dict[str, object]] = []

    def __call__(self, prompt: PromptRequest) -> AsyncIterator[Delta]:
        self.bodies.append(prompt.body)

        async def stream() -> AsyncIterator[Delta]:
            longest = max(len(answer) for answer in self.answers) + self.tail
            for step in range(longest):
                for index, answer in enumerate(self.answers):
                    token, logprob = answer[step] if step < len(answer) else ("\nx = 1", -0.1)
                    self.read += 1
                    yield Delta(token, ((token, logprob),), None, index)

        return stream()


async def test_distinct_alternatives_likeliest_first_from_one_request() -> None:
    stream = Interleaved([
        [("3.14", -0.9), (" * r", -0.4), (" ** 2", -0.3), ("\n", -0.1)],
        [("math.pi", -0.1), (" * r * r", -0.1), ("\n", -0.1)],
        [("3.14", -0.9), (" * r", -0.4), (" ** 2  ", -0.3), ("\n", -0.1)],  # the first, after the clean-up
    ])
    request = pipeline.Request(text=TEXT, offset=OFFSET, language="python")
    found = await pipeline.complete_alternatives(request, Settings(), stream, 3)
    assert [completion.text for completion in found] == ["math.pi * r * r", "3.14 * r ** 2"]
    assert len(stream.bodies) == 1 and stream.bodies[0]["n"] == 3
    assert stream.bodies[0]["temperature"] == pipeline.ALTERNATIVES_TEMPERATURE  # greedy would repeat itself
    assert stream.read < 3 * (4 + stream.tail), "the stream was read past every answer's end"


async def test_a_single_answer_when_all_agree() -> None:
    same = [("math.pi * r ** 2", -0.2), ("\n", -0.1)]
    request = pipeline.Request(text=TEXT, offset=OFFSET, language="python")
    found = await pipeline.complete_alternatives(request, Settings(), Interleaved([same, same, same]), 3)
    assert [completion.text for completion in found] == ["math.pi * r ** 2"]
