"""Unit tests of the clean-up steps (postprocess.py, repeats.py, indent.py) and of `clean`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from langserver.completion.postprocess import (
    STEPS,
    Completion,
    clean,
    is_complete,
    normalize_indentation,
    step_names,
    strip_fence,
    strip_leading_newlines,
    strip_special_tokens,
    strip_trailing_whitespace,
)
from langserver.completion.postprocess.indent import IndentStyle, infer_style, max_plausible_indent, restyle
from langserver.completion.postprocess.policy import Policy
from langserver.completion.postprocess.repeats import (
    cut_repetition,
    find_suffix_copy,
    strip_typed_prefix,
    trim_suffix_overlap,
    typed_candidates,
)
from langserver.completion.stages.context import Context

EXAMPLES = json.loads((Path(__file__).parents[1] / "data" / "fim_examples.json").read_text(encoding="utf-8"))
POLICY = Policy()

FUNC = "def total(values):\n    result = 0\n    "
AFTER = "\n    return result\n"


def ctx(prefix: str = FUNC, suffix: str = AFTER, language: str = "python") -> Context:
    return Context(prefix=prefix, suffix=suffix, language=language)


# --- the examples the e2e tests memorise come out unchanged ------------------------------


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["name"] for e in EXAMPLES])
def test_fim_example_middle_is_kept_exactly(example: dict[str, str]) -> None:
    context = Context(example["prefix"], example["suffix"], example["language"])
    assert clean(example["middle"], context) == Completion(text=example["middle"], replace_chars=0)


def test_steps_are_named_and_ordered() -> None:
    assert step_names() == [
        "strip_special_tokens", "strip_fence", "strip_leading_newlines", "strip_typed_prefix",
        "normalize_indentation", "cut_repetition", "limit_lines", "trim_suffix_overlap",
        "trim_to_parsing", "strip_trailing_whitespace",
    ]
    assert len(STEPS) == 10


def test_empty_result_means_nothing_to_show() -> None:
    assert clean("   \n", ctx()) is None
    assert clean("<|im_end|>", ctx()) is None


# --- special tokens -------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ("x + 1<|im_end|>", "x + 1"),
    ("x + 1<|endoftext|>junk", "x + 1"),
    ("<|fim_middle|>x + 1", "x + 1"),
    ("<|im_start|>assistant\nx + 1<|im_end|>", "x + 1"),
    ("x + 1\n<|file_sep|>other.py\nimport os\n", "x + 1\n"),
    ("x + 1<|im_", "x + 1"),
    ("x + 1", "x + 1"),
])
def test_strip_special_tokens(raw: str, expected: str) -> None:
    assert strip_special_tokens(raw, ctx(), POLICY) == expected


# --- fences and prose -------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    "```python\nresult += v\n```",
    "```\nresult += v\n```\n",
    "Here is the completion:\n```python\nresult += v\n```",
    "Sure! Here is the code you asked for.\n\n```py\nresult += v\n```\nThis adds v to the result.",
    "```python\nresult += v",  # cut by the token limit before the closing fence
])
def test_strip_fence(raw: str) -> None:
    assert strip_fence(raw, ctx(), POLICY) == "result += v"


def test_fence_kept_when_code_precedes_it_or_in_markdown() -> None:
    code = "x = 1\n```\n"
    assert strip_fence(code, ctx(), POLICY) == code
    fenced = "```python\nx = 1\n```"
    assert strip_fence(fenced, ctx(language="markdown"), POLICY) == fenced


# --- leading newlines ------------------------------------------------------------------------


def test_leading_newline_dropped_on_a_blank_line_with_its_repeated_indent() -> None:
    assert strip_leading_newlines("\nresult += v", ctx(), POLICY) == "result += v"
    assert strip_leading_newlines("\n    result += v", ctx(), POLICY) == "result += v"


def test_leading_newline_kept_at_the_end_of_a_non_empty_line() -> None:
    context = ctx(prefix="def f(x):", suffix="\n")
    assert strip_leading_newlines("\n    return x", context, POLICY) == "\n    return x"


def test_leading_newline_dropped_mid_line() -> None:
    context = ctx(prefix="x = f(", suffix=")\n")
    assert strip_leading_newlines("\n1, 2", context, POLICY) == "1, 2"


# --- the typed part repeated -------------------------------------------------------------------


@pytest.mark.parametrize(("prefix", "raw", "expected"), [
    ("    return", "    return x + 1", " x + 1"),
    ("    return", "return x + 1", " x + 1"),
    ("    return math.p", "math.pi * r", "i * r"),
    ("    result = compute(", "compute(values)", "values)"),
    ("    print(len", "len(x))", "(x))"),
    ("        '", "        'two': 2,", "two': 2,"),
    ("    return math.p", "i * r", "i * r"),  # nothing repeated
    ("    s = '", "'", "'"),  # a lone quote typed is closed, not repeated
    ("    x = (", "(a + b) * c", "(a + b) * c"),
])
def test_strip_typed_prefix(prefix: str, raw: str, expected: str) -> None:
    assert strip_typed_prefix(raw, ctx(prefix="def f():\n" + prefix, suffix="\n"), POLICY) == expected


def test_typed_candidates_longest_first() -> None:
    assert typed_candidates("    x = foo.ba") == ["    x = foo.ba", "x = foo.ba", "foo.ba", "ba"]


def test_repeated_indentation_on_a_blank_line() -> None:
    context = ctx(prefix='def f(x):\n    """Doc."""\n    ', suffix="\n")
    assert strip_typed_prefix("    return x", context, POLICY) == "return x"


def test_deeper_indentation_after_a_block_opener_is_kept() -> None:
    context = ctx(prefix="def f(x):\n    if x:\n    ", suffix="\n")
    assert strip_typed_prefix("    return x", context, POLICY) == "    return x"


def test_echo_of_previous_lines_is_dropped() -> None:
    context = ctx(prefix="def f(x):\n    y = compute(x)\n    ", suffix="\n")
    assert strip_typed_prefix("    y = compute(x)\n    return y", context, POLICY) == "return y"


# --- indentation -------------------------------------------------------------------------------


def test_infer_style_spaces_and_width() -> None:
    assert infer_style(ctx(prefix="if a:\n  if b:\n    c()\n")) == IndentStyle(use_tabs=False, width=2)
    assert infer_style(ctx(prefix="if a:\n\tif b:\n\t\tc()\n")).use_tabs


def test_editor_options_win() -> None:
    style = infer_style(ctx(prefix="if a:\n\tb()\n"), tab_size=2, insert_spaces=True)
    assert style == IndentStyle(use_tabs=False, width=2)


def test_restyle() -> None:
    assert restyle("\t\t", IndentStyle(False, 4)) == "        "
    assert restyle("      ", IndentStyle(True, 4)) == "\t  "
    assert restyle("    ", IndentStyle(False, 4)) == "    "


def test_normalize_indentation_tabs_to_spaces_and_back() -> None:
    assert normalize_indentation("for v in values:\n\t\tresult += v", ctx(), POLICY) == \
        "for v in values:\n        result += v"
    tabbed = ctx(prefix="def f(values):\n\tresult = 0\n\t", suffix="\n\treturn result\n")
    assert normalize_indentation("for v in values:\n        result += v", tabbed, POLICY) == \
        "for v in values:\n\t\tresult += v"


def test_max_plausible_indent() -> None:
    style = IndentStyle(False, 4)
    assert max_plausible_indent(ctx(prefix="def f():\n    "), style) == 4
    assert max_plausible_indent(ctx(prefix="    x = 1\n    "), style) == 4


# --- the text after the cursor --------------------------------------------------------------------


def test_overlap_with_the_whole_suffix_or_its_first_line() -> None:
    context = ctx()
    assert trim_suffix_overlap("result += 1" + AFTER, context, POLICY) == "result += 1"
    assert trim_suffix_overlap("result += 1\n    return result", context, POLICY) == "result += 1"
    assert trim_suffix_overlap("result += 1\n    return result\n\n", context, POLICY) == "result += 1"


def test_overlap_cut_mid_line_by_the_token_limit() -> None:
    context = ctx(suffix="\n    result = normalise(result)\n    return result\n")
    assert trim_suffix_overlap("result += 1\n    result = normal", context, POLICY) == "result += 1"


def test_short_same_line_overlap_is_judged_by_balance() -> None:
    call = ctx(prefix="x = compute(", suffix=")\n")
    assert trim_suffix_overlap("values, 2)", call, POLICY) == "values, 2"
    assert trim_suffix_overlap("f(a)", call, POLICY) == "f(a)"
    quoted = ctx(prefix='name = "', suffix='"\n')
    assert trim_suffix_overlap('abc"', quoted, POLICY) == "abc"


def test_coincidental_line_start_is_not_an_overlap() -> None:
    # The completion ends with "\nb" and the suffix starts with "\nb = ...": a real line
    # that merely begins like the next one.
    context = ctx(prefix="def f():\n    a = 1\n    ", suffix="\n    b = 2\n")
    assert trim_suffix_overlap("c = 0\n    b", context, POLICY) == "c = 0\n    b"


def test_copy_of_the_suffix_inside_the_completion() -> None:
    context = ctx(suffix="\n    result = finish(result)\n    return result\n")
    raw = "result += 1\n    result = finish(result)\n    return result\n\nprint(total([1]))"
    assert find_suffix_copy(raw, context) == len("result += 1\n")
    assert trim_suffix_overlap(raw, context, POLICY) == "result += 1"


@settings(max_examples=200, deadline=None)
@given(
    middle=st.text(alphabet="abcxyz =+()\n:", max_size=30),
    suffix=st.text(alphabet="abcxyz =+()\n:", min_size=1, max_size=30),
    junk=st.text(alphabet="abcxyz =+()\n:", max_size=10),
)
def test_never_returns_a_copy_of_the_suffix(middle: str, suffix: str, junk: str) -> None:
    if not suffix.strip():
        return
    context = Context(prefix="x = 1\n", suffix=suffix, language="")
    for raw in (suffix, suffix + junk, middle + suffix):
        result = clean(raw, context)
        # (a completion may start like the suffix only when it replaces that text)
        assert result is None or result.replace_chars or not result.text.startswith(suffix), (raw, result)


# --- loops and whitespace -------------------------------------------------------------------------


def test_a_copy_of_the_next_lines_shows_nothing() -> None:
    assert clean("return result", ctx()) is None
    assert clean("\n    return result", ctx()) is None
    two = ctx(suffix="\n    result += 1\n    return result\n")
    assert clean("result += 1\n    return result", two) is None


def test_one_equal_line_in_a_longer_answer_is_kept() -> None:
    # fill-in-the-middle answers often start with a line that also follows them
    context = ctx(prefix="def f(n):\n    if n == 0:\n        ", suffix="\n        return 0\n    return 1\n")
    assert clean("return 0\n    if n == 1:", context) == Completion("return 0\n    if n == 1:")


def test_a_completion_that_rewrites_the_rest_of_the_line_replaces_it() -> None:
    context = ctx(prefix="def f():\n    y = f(x", suffix=")\n")
    assert clean(") + 1", context) == Completion(") + 1", replace_chars=1)


def test_cut_repetition() -> None:
    assert cut_repetition("a = 1\nb += 1\nb += 1\nb += 1\nb +") == "a = 1\nb += 1"
    assert cut_repetition("x()\ny()\nx()\ny()\nx()\ny()") == "x()\ny()"
    assert cut_repetition("b += 1\nb += 1\nb += 1") == "b += 1\nb += 1\nb += 1"  # three times may be meant
    assert cut_repetition("}\n}\n}\n}") == "}\n}\n}\n}"  # closers are not a loop


def test_strip_trailing_whitespace() -> None:
    assert strip_trailing_whitespace("a = 1   \nb = 2  \n\n", ctx(), POLICY) == "a = 1\nb = 2"
    mid = ctx(prefix="if ", suffix="b:\n")
    assert strip_trailing_whitespace("a and ", mid, POLICY) == "a and "
    in_string = 's = """one  \ntwo"""'
    assert strip_trailing_whitespace(in_string, ctx(), POLICY) == in_string


# --- clean: identity on clean answers ---------------------------------------------------------------

STATEMENTS = ["result += v", "result = result * 2", "if v > 0:", "for v in values:", "print(result)",
              "values.sort()", "while result > 10:", "result -= 1", "v = values[0]", "pass"]


@st.composite
def clean_middles(draw: st.DrawFn) -> str:
    """Valid statement sequences at indent 4 (first line after the cursor's indentation)."""
    count = draw(st.integers(1, 5))
    lines: list[str] = []
    depth = 4
    for index in range(count):
        # (four equal lines in a row are a loop, not a clean answer: no line twice in a row)
        statement = draw(st.sampled_from([s for s in STATEMENTS if not lines or lines[-1].strip() != s]))
        lines.append(("" if index == 0 else " " * depth) + statement)
        depth = depth + 4 if statement.endswith(":") else draw(st.sampled_from(sorted({4, depth})))
    if lines[-1].endswith(":"):
        lines.append(" " * depth + "pass")
    return "\n".join(lines)


@settings(max_examples=150, deadline=None)
@given(middle=clean_middles())
def test_cleaning_a_clean_answer_is_the_identity(middle: str) -> None:
    assume(cut_repetition(middle) == middle)  # a block three times in a row is a loop, not clean
    for language in ("python", ""):
        assert clean(middle, ctx(language=language)) == Completion(middle)


@settings(max_examples=100, deadline=None)
@given(middle=clean_middles())
def test_cleaning_is_idempotent_on_noisy_answers(middle: str) -> None:
    assume(cut_repetition(middle) == middle)
    context = ctx()
    for raw in (f"```python\n{middle}\n```", middle + AFTER, "<|fim_middle|>" + middle + "<|im_end|>"):
        first = clean(raw, context)
        assert first is not None and first.text == middle
        assert clean(first.text, context) == first


# --- is_complete on the raw stream (what the streaming layer calls) ----------------------------

MID = Context("def f():\n    y = compute(", ")\n    return y\n", "python")


def test_stream_fence_line_is_not_the_single_line() -> None:
    assert not is_complete("```python\n", MID, POLICY)
    assert is_complete("```python\nvalues\n", MID, POLICY)


def test_stream_sentence_before_the_code_is_waited_through() -> None:
    assert not is_complete("Here is the code:\n", MID, POLICY)
    assert not is_complete("Here is the code:\n\n```python\n", MID, POLICY)
    assert is_complete("Here is the code:\n```python\nvalues)\n", MID, POLICY)


def test_stream_closing_fence_or_leaked_token_ends_it() -> None:
    assert is_complete("```python\nfor v in values:\n        result += v\n```\n", ctx(), POLICY)
    assert is_complete("result += v<|im_end|>", ctx(), POLICY)
    assert not is_complete("```python\nfor v in values:\n        result += v\n", ctx(), POLICY)


@pytest.mark.parametrize("raw", [
    "```python\nfor v in values:\n        result += v\n```\nThis sums the values.\n",
    "Here is the code:\n```python\nfor v in values:\n        result += v\n```\n",
    "for v in values:\n        result += v\n    return result\n\n\ndef other():\n    pass\n",
    "\nfor v in values:\n        result += v<|im_end|>\n<|im_start|>user\n",
    "result += 1\n    result += 1\n    result += 1\n    result += 1\n    result += 1\n",
])
def test_stopping_where_is_complete_says_shows_the_same(raw: str) -> None:
    for cut in range(1, len(raw) + 1):
        if is_complete(raw[:cut], ctx(), POLICY):
            assert clean(raw[:cut], ctx()) == clean(raw, ctx()), raw[:cut]
            return
    assert clean(raw, ctx()) is not None
