"""The confidence multi-line policy (`completion.lineConfidence`, multiline.keep_sure_lines):
a block ends before the first statement after its first line that the model was unsure of;
a block it is sure of stays whole; lines are never cut in the middle, nor a later statement
inside its brackets; the lines inside the first line's own brackets (or the bracket the cursor
is in, or its comment) are judged one by one, each together with the first line; a line that
dedents to where the suffix's next line stands ends the block; where the cursor's block goes on
below it, a later line must be surer."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest

from langserver.backend.request import Delta, PromptRequest
from langserver.completion import pipeline
from langserver.completion.postprocess import Completion
from langserver.completion.postprocess.multiline import keep_sure_lines, statement_confidence
from langserver.completion.stages.context import Context
from langserver.settings import parse_settings

FUNC = Context("def f(values):\n    total = 0\n    ", "\n    return total\n", "python")
PIECE = re.compile(r"\s+|\w+|[^\w\s]")


def stream(sure: str, unsure: str = "", logprob: float = -2.0) -> tuple[Delta, ...]:
    """Token-sized pieces: certain over `sure`, `logprob` each over `unsure`."""
    return (*(Delta(p, ((p, 0.0),)) for p in PIECE.findall(sure)),
            *(Delta(p, ((p, logprob),)) for p in PIECE.findall(unsure)))


def test_a_sure_block_stays_whole() -> None:
    text = "for v in values:\n        total += v\n    return total"
    assert keep_sure_lines(text, stream(text), FUNC, 0.3) == text


def test_the_block_ends_before_the_first_unsure_statement() -> None:
    sure = "for v in values:\n        total += v"
    text = sure + "\n    total *= 2\n    return total"
    assert keep_sure_lines(text, stream(sure, text[len(sure):]), FUNC, 0.3) == sure
    # Sure lines after an unsure one do not bring it back: the block ended there.
    parts = (*stream(sure, "\n    total *= 2"), *stream("\n    return total"))
    assert keep_sure_lines(text, parts, FUNC, 0.3) == sure


# The cursor's block ends at the cursor: nothing below it but the end of the function.
END = Context("def f(values):\n    total = 0\n    ", "\n", "python")


def test_the_first_line_is_always_kept_and_the_threshold_decides() -> None:
    text = "total += 1\n    return total"
    unsure = stream("", text, logprob=-0.2)  # the second line: 4 tokens (break, indent, word, space, word)
    assert keep_sure_lines(text, unsure, END, 0.9) == "total += 1"
    assert keep_sure_lines(text, unsure, END, 0.01) == text
    assert keep_sure_lines(text, unsure, END, 0) == text  # 0 = off


def test_inside_code_a_later_line_must_be_surer() -> None:
    # FUNC's `return total` goes on below the cursor: a line the model gives 0.37 stays at the
    # end of a block and is cut inside code, even with a low threshold; a certain one stays.
    text = "total += 1\n    total *= 2"
    unsure = stream("total += 1", text[len("total += 1"):], logprob=-0.2)
    assert keep_sure_lines(text, unsure, END, 0.2) == text
    assert keep_sure_lines(text, unsure, FUNC, 0.2) == "total += 1"
    assert keep_sure_lines(text, stream(text), FUNC, 0.2) == text
    assert keep_sure_lines(text, unsure, FUNC, 0) == text  # the line confidence off: off too
    # Code below that stands deeper (the body of the cursor's `if`) goes on too; code to the left
    # (the function's end, a closing bracket) does not.
    header = Context("def f(values):\n    if values:", "\n        values.sort()\n    return values\n", "python")
    body = "\n        values.reverse()\n        values.pop()"
    assert keep_sure_lines(body, stream("\n        values.reverse()", body[26:], logprob=-0.2), header, 0.2) \
        == "\n        values.reverse()"
    closing = Context("result = compute(\n    first,\n    ", "\n)\n", "python")
    items = "second,\n    third,"
    assert keep_sure_lines(items, stream("", items, logprob=-0.05), closing, 0.2) == items


def test_a_later_statement_is_never_cut_inside_its_brackets() -> None:
    sure = "total = 0\n"
    text = "total = 0\n    total = sum(\n        values,\n    )\n    return total"
    # Its continuation lines belong to it: one unit from `total = sum(` to `)`, then `return`.
    scored = statement_confidence(stream(text), text, FUNC)
    assert scored is not None and [offset for offset, _ in scored] == [text.index("    total = sum"),
                                                                         text.index("    return")]
    unsure_inside = (*stream(sure + "    total = sum(\n"), *stream("", "        values,\n"),
                     *stream("    )\n    return total"))
    assert keep_sure_lines(text, unsure_inside, FUNC, 0.3) == "total = 0"


def test_the_first_statement_is_judged_line_by_line() -> None:
    # `def` and `raise` lines that open a bracket: the model is sure of the line, not of what
    # it writes inside. The first line alone is shown, as `never` would show it; a sure
    # argument list stays.
    text = "total = sum(\n        values,\n    )\n    return total"
    assert keep_sure_lines(text, stream("total = sum(\n", text[len("total = sum(\n"):]), FUNC, 0.3) \
        == "total = sum("
    assert keep_sure_lines(text, stream(text[:-len("\n    return total")], "\n    return total"), FUNC, 0.3) \
        == "total = sum(\n        values,\n    )"
    scored = statement_confidence(stream(text), text, FUNC)
    assert scored is not None and [offset for offset, _ in scored] == [
        text.index("        values"), text.index("    )"), text.index("    return")]


def test_the_first_statement_is_as_sure_as_its_first_line() -> None:
    # Given a wrong first line the model is sure of what it writes inside it (`self,` after
    # `def __init__(`): the lines of the first line's statement are judged with the first line.
    text = "total = sum(\n        values,\n    )"
    unsure_head = (*stream("", "total = sum("), *stream("\n        values,\n    )"))
    assert keep_sure_lines(text, unsure_head, FUNC, 0.3) == "total = sum("
    assert keep_sure_lines(text, stream(text), FUNC, 0.3) == text  # a sure one stays whole


CALL = Context("result = compute(\n    first,\n    ", "\n)\n", "python")


def test_the_next_item_of_an_open_list_is_judged_with_the_first() -> None:
    # The cursor is in the arguments an earlier line opened: each line is the next item of
    # one statement, not a statement of its own.
    text = "second,\n    third,"
    unsure_first = (*stream("", "second,"), *stream("\n    third,"))
    assert keep_sure_lines(text, unsure_first, CALL, 0.3) == "second,"
    assert keep_sure_lines(text, stream(text), CALL, 0.3) == text
    scored = statement_confidence(stream(text), text, CALL)
    assert scored is not None and [offset for offset, _ in scored] == [text.index("    third")]


def test_a_comment_is_judged_with_its_first_line() -> None:
    text = "# add them up\n    # one by one\n    total = sum(values)"
    unsure_first = (*stream("", "# add them up"), *stream(text[len("# add them up"):]))
    assert keep_sure_lines(text, unsure_first, FUNC, 0.3) == "# add them up"
    assert keep_sure_lines(text, stream(text), FUNC, 0.3) == text


LOOP = Context("def f(values):\n    for v in values:\n        if v < 0:\n            ", "\n    return True\n", "python")


def test_a_line_that_dedents_to_the_suffix_s_next_line_ends_the_block() -> None:
    # `return True` stands at 4 columns after the cursor: a sure `return False` there is a
    # second version of it, not more of the block.
    text = "return False\n    return False"
    unsure = stream("return False", "\n    return False", logprob=-0.35)  # 0.25: above 0.2, below 0.3
    assert keep_sure_lines(text, unsure, LOOP, 0.2) == "return False"
    assert keep_sure_lines(text, stream(text), LOOP, 0.2) == text  # a sure one (a scripted block) stays
    # The suffix has no code after the cursor's block: the block goes on. Where the cursor's own
    # block goes on below (deeper than the dedented line), a later line needs GOES_ON_CONFIDENCE.
    inner = "return False\n        else:\n            continue"
    inner_unsure = stream("return False", inner[len("return False"):], logprob=-0.45)  # 0.26
    deeper = Context(LOOP.prefix, "\n            v = -v\n    return True\n", "python")
    assert keep_sure_lines(inner, inner_unsure, deeper, 0.2) == "return False"
    assert keep_sure_lines(inner, stream(inner), deeper, 0.2) == inner
    end = Context(LOOP.prefix, "\n", "python")
    assert keep_sure_lines(text, unsure, end, 0.2) == text
    assert keep_sure_lines(text, unsure, LOOP, 0) == text  # the line confidence off: off too


def test_without_log_probabilities_nothing_is_cut() -> None:
    text = "total += 1\n    return total"
    assert keep_sure_lines(text, (Delta(text),), FUNC, 0.3) == text


def test_the_lines_are_found_after_the_clean_up_re_indented_them() -> None:
    raw = "total += 1\n\treturn total"  # tabs in the answer, spaces in the document
    assert keep_sure_lines("total += 1\n    return total", stream("total += 1", raw[10:]), FUNC, 0.3) == "total += 1"


@pytest.mark.parametrize(("setting", "multiline", "after", "asked"), [
    (0.3, "auto", "", True),  # several lines may be shown here
    (0.3, "auto", "values)", False),  # text right of the cursor: one line, no use for them
    (0.3, "always", "values)", True),
    (0.3, "never", "", False),
    (0.0, "auto", "", False),  # off (and the gate off)
])
def test_log_probabilities_are_asked_for_only_where_they_are_used(setting: float, multiline: str, after: str,
                                                                  asked: bool) -> None:
    settings, problems = parse_settings({"completion": {"lineConfidence": setting, "multiline": multiline,
                                                        "minConfidence": 0}})
    assert not problems
    text = "def f(values):\n    return sum(" + after + "\n"
    request = pipeline.Request(text=text, offset=len("def f(values):\n    return sum("), language="python")
    context = pipeline.make_context(request, settings, None)
    body = pipeline.make_prompt(context, settings).body
    assert ("logprobs" in body) is asked


def test_the_server_path_cuts_an_unsure_tail() -> None:
    settings, _ = parse_settings({"completion": {"lineConfidence": 0.3, "minConfidence": 0}})
    document = "def f(values):\n    total = 0\n    \n    return total\n"
    offset = document.index("    \n") + 4

    async def open_stream(prompt: PromptRequest) -> AsyncIterator[Delta]:
        assert "logprobs" in prompt.body
        for delta in stream("for v in values:\n        total += v", "\n    total = -total"):
            yield delta

    request = pipeline.Request(text=document, offset=offset, language="python")
    completion = asyncio.run(pipeline.complete_streaming(request, settings, open_stream))
    assert completion is not None and completion.text == "for v in values:\n        total += v"
    assert completion.confidence is not None  # scored on what is shown


def test_a_block_cut_to_a_copy_of_the_line_below_shows_nothing() -> None:
    """The model writes the line that follows the cursor, then lines it is unsure of: the whole
    block was more than a copy, what the cut leaves is not (httpx/_client.py in the repo split)."""
    settings, _ = parse_settings({"completion": {"lineConfidence": 0.3, "minConfidence": 0}})
    document = ("def send(self, url, headers):\n    return self.request(\n        url=url,\n        \n"
                "        headers=headers,\n    )\n")
    offset = document.index("        \n") + 8

    def answer(sure: str, unsure: str) -> Completion | None:
        async def open_stream(prompt: PromptRequest) -> AsyncIterator[Delta]:
            for delta in stream(sure, unsure):
                yield delta

        request = pipeline.Request(text=document, offset=offset, language="python")
        return asyncio.run(pipeline.complete_streaming(request, settings, open_stream))

    assert answer("headers=headers,", "\n        cookies=cookies,") is None
    # A sure block that starts with that line stays: the model means the lines after it.
    sure = answer("headers=headers,\n        cookies=cookies,", "")
    assert sure is not None and sure.text == "headers=headers,\n        cookies=cookies,"
    # A cut that leaves a line of its own is shown.
    own = answer("timeout=timeout,", "\n        cookies=cookies,")
    assert own is not None and own.text == "timeout=timeout,"


def test_bad_setting_falls_back_with_its_name() -> None:
    settings, problems = parse_settings({"completion": {"lineConfidence": 2}})
    assert settings.completion.line_confidence == 0.03
    assert problems and problems[0].startswith("vllmGhost.completion.lineConfidence:")
