"""Multi-line policy: single line, block end, replacing the rest of the line, is_complete."""

from __future__ import annotations

import pytest

from langserver.completion.postprocess import Completion, clean
from langserver.completion.postprocess.multiline import (
    allows_multiline,
    block_floor,
    is_complete,
    limit_lines,
    replace_chars,
    single_line,
)
from langserver.completion.postprocess.policy import Policy
from langserver.completion.stages.context import Context

AUTO, NEVER, ALWAYS = Policy("auto"), Policy("never"), Policy("always")
FUNC = Context("def f(values):\n    total = 0\n    ", "\n    return total\n", "python")
METHOD = Context("class A:\n    def f(self):\n        if self.x:\n            ", "\n", "python")
TOP = Context("import os\n", "\n", "python")
JS = Context("function f(a) {\n  ", "\n}\n", "javascript")
MID = Context("def f():\n    y = compute(", ")\n", "python")


def test_allows_multiline() -> None:
    assert allows_multiline(FUNC, AUTO) and not allows_multiline(MID, AUTO)
    assert not allows_multiline(FUNC, NEVER) and allows_multiline(MID, ALWAYS)


@pytest.mark.parametrize(("text", "context", "expected"), [
    ("total += 1\n    total *= 2", FUNC, "total += 1"),
    ("\n    return x\n    y = 1", Context("def f(x):", "\n", "python"), "\n    return x"),  # opens the next line
    ("\nx", MID, ""),  # mid-line a line break first gives nothing
    ("a, b\r\nc", MID, "a, b"),
])
def test_single_line(text: str, context: Context, expected: str) -> None:
    assert single_line(text, context) == expected


@pytest.mark.parametrize(("context", "floor"), [
    (FUNC, 1),  # inside a top-level function: lines must stay indented
    (METHOD, 5),  # inside a method: the class body level ends it
    (TOP, 0),  # top level
    (JS, 1),
    (Context("def f():", "\n", "python"), 1),  # the cursor line is the header
])
def test_block_floor(context: Context, floor: int) -> None:
    assert block_floor(context) == floor


def test_limit_lines_stops_at_the_end_of_the_function() -> None:
    text = "for v in values:\n        total += v\n    return total\n\n\ndef g():\n    pass"
    assert limit_lines(text, FUNC, AUTO) == "for v in values:\n        total += v\n    return total"


def test_limit_lines_keeps_inner_dedents_of_a_fill_in_the_middle_answer() -> None:
    text = "return 1\n        y = 2"  # leaves the `if`, stays in the method
    assert limit_lines(text, METHOD, AUTO) == text


def test_limit_lines_stops_before_the_next_method() -> None:
    text = "return 1\n\n    def g(self):\n        pass"
    assert limit_lines(text, METHOD, AUTO) == "return 1"


def test_limit_lines_keeps_the_closing_brace_line() -> None:
    assert limit_lines("return a;\n}\n\nfunction g() {\n}", JS, AUTO) == "return a;\n}"


def test_limit_lines_at_top_level_stops_at_a_new_definition() -> None:
    assert limit_lines("import sys\n\n\ndef main():\n    pass", TOP, AUTO) == "import sys"


def test_continuation_lines_do_not_end_the_block() -> None:
    text = 'x = """\ndocs at column 0\n"""\n    return x'
    assert limit_lines(text, FUNC, AUTO) == text
    call = "y = g(\n1, 2)\n    return y"
    assert limit_lines(call, FUNC, AUTO) == call


def test_never_and_always() -> None:
    assert limit_lines("a\n    b", FUNC, NEVER) == "a"
    assert limit_lines("a,\n    b", MID, ALWAYS) == "a,\n    b"


def test_replace_chars() -> None:
    header = Context("def f(", "):\n    pass\n", "python")
    assert replace_chars("a, b) -> int:", header) == 2  # rewrote the rest of the line
    assert replace_chars("a, b", header) == 0  # goes before it
    assert replace_chars("values", MID) == 0
    assert replace_chars("f(a)", MID) == 0
    assert replace_chars("values\n", MID) == 0


def test_clean_mid_line_single_line() -> None:
    assert clean("values, 2)\n    print(y)", MID) == Completion("values, 2")
    header = Context("def f(", "):\n    pass\n", "python")
    assert clean("a, b) -> int:", header) == Completion("a, b) -> int:", replace_chars=2)


# --- is_complete (streaming early stop) ---------------------------------------------------------


def test_is_complete_single_line_at_the_line_break() -> None:
    assert not is_complete("values", MID, AUTO)
    assert is_complete("values)\n", MID, AUTO)
    assert not is_complete("total += 1", FUNC, NEVER)
    assert is_complete("total += 1\n", FUNC, NEVER)
    # at the end of a non-empty line the first break opens the line, the second ends it
    opener = Context("def f(x):", "\n", "python")
    assert not is_complete("\n    return", opener, NEVER)
    assert is_complete("\n    return x\n", opener, NEVER)


def test_is_complete_multi_line_at_the_block_end() -> None:
    assert not is_complete("for v in values:\n        total += v\n", FUNC, AUTO)
    assert not is_complete("for v in values:\n        total += v\n    return total", FUNC, AUTO)
    assert is_complete("for v in values:\n        total += v\n\n\ndef g():\n", FUNC, AUTO)


def test_is_complete_when_the_answer_runs_into_the_suffix() -> None:
    assert is_complete("total = sum(values)\n    return total\n", FUNC, AUTO)


def test_is_complete_on_a_loop() -> None:
    assert is_complete("x()\n    total += 1\n    total += 1\n    total += 1\n    total += 1\n", FUNC, AUTO)


def test_is_complete_agrees_with_clean() -> None:
    """Once a stream is complete, more text never changes what clean() shows."""
    answer = "for v in values:\n        total += v\n\n\ndef g():\n    return 2\n"
    for cut in range(1, len(answer) + 1):
        if is_complete(answer[:cut], FUNC, AUTO):
            assert clean(answer[:cut], FUNC) == clean(answer, FUNC)
            break
    else:
        pytest.fail("never complete")
