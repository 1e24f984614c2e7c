"""What a real model's answers look like through the streaming path (`pipeline.complete_streaming`,
what the server calls): echoed FIM and role tokens before the code, a line break first at a
cursor inside a line. Each answer arrives in token-sized deltas, as vLLM streams it, and the
test reads what the user would see, and how much of the stream was read."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

from langserver.backend.request import STOP_STRINGS, STOP_TOKENS, Delta, PromptRequest
from langserver.completion import pipeline
from langserver.completion.postprocess import Completion
from langserver.settings import CompletionSettings, Settings


class Recorded:
    """An OpenStream that yields fixed deltas and counts how many were read."""

    def __init__(self, deltas: list[str]) -> None:
        self.deltas = deltas
        self.read = 0

    def __call__(self, prompt: PromptRequest) -> AsyncIterator[Delta]:
        async def stream() -> AsyncIterator[Delta]:
            for delta in self.deltas:
                self.read += 1
                yield Delta(delta)

        return stream()


def settings(multiline: str = "auto") -> Settings:
    return Settings(completion=dataclasses.replace(CompletionSettings(), multiline=multiline))  # type: ignore[arg-type]


async def shown(text: str, cursor: str, deltas: list[str], multiline: str = "auto") -> tuple[Completion | None, int]:
    """The completion at `cursor` (a marker in `text`) and the deltas it read."""
    offset = text.index(cursor)
    request = pipeline.Request(text=text.replace(cursor, "", 1), offset=offset, language="python")
    stream = Recorded(deltas)
    completion = await pipeline.complete_streaming(request, settings(multiline), stream)
    return completion, stream.read


MID_LINE = "def add(a, b):\n    return sorted(|\n\nprint(add(1, 2))\n"
END_OF_LINE = "def add(a, b):\n    total = a + b|\n\nprint(add(1, 2))\n"
BLANK_LINE = "def add(a, b):\n    |\n\nprint(add(1, 2))\n"


def test_fim_middle_is_no_stop_token() -> None:
    # As a stop string vLLM ends the answer at an echoed <|fim_middle|>, before any code.
    assert "<|fim_middle|>" not in STOP_STRINGS
    assert "<|fim_middle|>" not in STOP_TOKENS
    assert "<|endoftext|>" in STOP_TOKENS and "<|im_end|>" in STOP_TOKENS


async def test_an_echoed_fim_middle_before_the_code_is_dropped_not_the_end() -> None:
    completion, read = await shown(BLANK_LINE, "|", ["<|fim_middle|>", "total", " =", " a", " +", " b", "\n", "x"],
                                   multiline="never")
    assert completion == Completion("total = a + b")
    assert read == 7  # the stream stopped at the end of the line, not at the token


async def test_an_echoed_role_header_before_the_code_is_dropped() -> None:
    deltas = ["<|im_start|>", "assistant", "\n", "a", "+", "b", "\n", "junk"]
    completion, read = await shown(MID_LINE.replace("sorted(", "total = "), "|", deltas, multiline="never")
    assert completion == Completion("a+b")
    assert read == 7


async def test_a_fim_token_after_the_code_still_ends_the_stream() -> None:
    completion, read = await shown(BLANK_LINE, "|", ["return a", "<|fim_middle|>", "print", "(1)"], multiline="never")
    assert completion == Completion("return a")
    assert read == 2


async def test_a_line_break_first_inside_an_unfinished_line_continues_the_line() -> None:
    # The user paused after `sorted(`: the model's line break (and the spaces at the line
    # ends) must not push the rest of the call onto a line of its own.
    completion, _ = await shown(MID_LINE, "|", ["\n", "[a", ",", " b", "])", "   ", "\n"])
    assert completion == Completion("[a, b])")


async def test_a_line_break_first_after_an_unfinished_assignment() -> None:
    completion, _ = await shown(MID_LINE.replace("sorted(", "total ="), "|", ["\n", " a", " +", " b", "\n"])
    assert completion == Completion(" a + b")


async def test_a_line_break_first_after_a_finished_line_still_opens_the_next_line() -> None:
    completion, _ = await shown(END_OF_LINE, "|", ["\n", "    return", " total", "\n", "\n", "print"],
                                multiline="never")
    assert completion == Completion("\n    return total")


BLOCK = "def check(lst):\n    |\n        return 'No'\n    return 'Yes'\n"


async def test_a_line_that_recurs_below_does_not_end_a_block_early() -> None:
    # `return 'No'` is also the suffix's next line, but the answer goes on with other code:
    # the stream must not stop there (the clean-up keeps the whole block).
    deltas = ["if", " len(lst)", " != 2:", "\n", "        return", " 'No'", "\n", "    if", " not lst:", "\n"]
    completion, read = await shown(BLOCK, "|", deltas)
    assert completion == Completion("if len(lst) != 2:\n        return 'No'\n    if not lst:")
    assert read == len(deltas)


async def test_two_lines_of_the_suffix_in_a_row_end_the_stream() -> None:
    text = "def check(lst):\n    |\n    total = 0\n    return total\n"
    deltas = ["if not lst:", "\n", "        return 0", "\n", "    total = 0", "\n", "    return total", "\n", "x", "\n"]
    completion, read = await shown(text, "|", deltas)
    assert completion == Completion("if not lst:\n        return 0")
    assert read < len(deltas)


async def test_a_line_break_first_inside_a_literal_of_several_lines_continues_the_line() -> None:
    # The cursor after `2` in a dict that closes in the answer: neither reading parses
    # on the first line alone, and inside brackets the break is only spacing.
    text = 'def names(n):\n    table = {\n        1: "one",\n        2|\n    return table[n]\n'
    deltas = ["\n", ':', ' "two",', "   ", "\n", "    }", "\n"]
    completion, _ = await shown(text, "|", deltas)
    assert completion == Completion(': "two",\n    }')


async def test_a_next_line_that_would_leave_the_function_is_no_next_line() -> None:
    # After `return ` at the end of a function, "\nresult" parses (a statement at top level)
    # but leaves the function: the model meant the rest of the line.
    text = "def f(values):\n    result = sorted(values)\n    return |\n"
    completion, _ = await shown(text, "|", ["\n", "result", "   ", "\n"])
    assert completion == Completion("result")
