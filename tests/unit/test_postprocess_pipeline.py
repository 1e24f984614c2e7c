"""The clean-up through `pipeline.complete`: a whole answer replayed through `complete_streaming`,
the path the server and the CLI take."""

from __future__ import annotations

import dataclasses

from langserver.backend.request import PromptRequest
from langserver.completion import pipeline
from langserver.completion.postprocess import STEPS, Completion
from langserver.settings import CompletionSettings, Settings

TEXT = "def f(values):\n    total = 0\n    \n    return total\n"
OFFSET = TEXT.index("\n    return")


def answer(raw: str) -> pipeline.Generate:
    async def generate(prompt: PromptRequest) -> str:
        return raw

    return generate


def settings(multiline: str = "auto") -> Settings:
    return Settings(completion=dataclasses.replace(CompletionSettings(), multiline=multiline))  # type: ignore[arg-type]


async def test_complete_cleans_with_the_multiline_setting() -> None:
    request = pipeline.Request(text=TEXT, offset=OFFSET, language="python")
    raw = "```python\nfor v in values:\n        total += v\n```"
    assert await pipeline.complete(request, settings(), answer(raw)) == \
        Completion("for v in values:\n        total += v")
    assert await pipeline.complete(request, settings("never"), answer(raw)) == Completion("for v in values:")


async def test_complete_uses_the_editor_indentation_options() -> None:
    request = pipeline.Request(text=TEXT, offset=OFFSET, language="python", tab_size=4, insert_spaces=False)
    raw = "for v in values:\n        total += v"
    completion = await pipeline.complete(request, settings(), answer(raw))
    assert completion == Completion("for v in values:\n\t\ttotal += v")


async def test_complete_with_fewer_steps() -> None:
    request = pipeline.Request(text=TEXT, offset=OFFSET, language="python")
    raw = "total += 1<|im_end|>"
    steps = tuple(step for step in STEPS if step.__name__ != "strip_special_tokens")
    assert await pipeline.complete(request, settings(), answer(raw), steps=steps) == Completion(raw)
    assert await pipeline.complete(request, settings(), answer(raw)) == Completion("total += 1")
