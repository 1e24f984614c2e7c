"""Syntax checks: bracket/string scanning, parsing, syntax-aware trimming."""

from __future__ import annotations

import pytest

from langserver.completion.postprocess.syntax import (
    continuation_lines,
    has_parser,
    imbalance,
    no_worse,
    parse_error,
    parse_region,
    trim_to_parsing,
)
from langserver.completion.stages.context import Context


@pytest.mark.parametrize(("text", "language", "expected"), [
    ("f(a, [b])", "python", 0),
    ("f(a, [b]", "python", 1),
    ("f(a))", "python", 1),
    ("s = ')'", "python", 0),
    ("x = 1  # )", "python", 0),
    ("x = 1; // )", "javascript", 0),
    ('s = "abc', "python", 1),
    ("let r = &'a x;", "rust", 0),  # a lifetime is not a quote
])
def test_imbalance(text: str, language: str, expected: int) -> None:
    assert imbalance(text, language) == expected


def test_continuation_lines() -> None:
    text = 'x = f(\n  1)\ny = """\ndoc\n"""\nz = 1'
    assert continuation_lines(text, "python") == [False, True, False, True, True, False]
    assert continuation_lines(text, "python", strings_only=True) == [False, False, False, True, True, False]


def test_parse_error_python() -> None:
    assert parse_error("def f():\n    return 1\n", "python") is None
    error = parse_error("def f():\n    return (\n", "python")
    assert error is not None and error.offset == len("def f():\n    return ")
    assert parse_error("anything {", "no-such-language") is None
    assert has_parser("python") and not has_parser("no-such-language")


def test_parse_region_is_the_top_level_statement_around_the_cursor() -> None:
    context = Context("import os\n\n\n@decorator\ndef f():\n    x = 1\n    ",
                      "\n    return x\n\n\ndef g():\n    pass\n", "python")
    prefix, suffix = parse_region(context)
    assert prefix == "@decorator\ndef f():\n    x = 1\n    "
    assert suffix == "\n    return x\n\n\n"


def test_no_worse() -> None:
    prefix, suffix = "def f(x):\n    ", "\n    return y\n"
    assert no_worse(prefix, "y = x + 1", suffix, "python")
    assert not no_worse(prefix, "y = (x + 1", suffix, "python")
    # prefix + suffix alone already fails the same way: the middle leaves it as it was
    broken = "\n    return y\n  bad indent\n"
    assert no_worse(prefix, "y = 2", broken, "python")


def test_trim_to_parsing_drops_a_cut_off_last_line() -> None:
    context = Context("def f(values):\n    total = 0\n    ", "\n    return total\n", "python")
    text = "for v in values:\n        total += v\n    return ("
    assert trim_to_parsing(text, context) == "for v in values:\n        total += v"


def test_trim_to_parsing_keeps_an_answer_that_parses() -> None:
    context = Context("def f(values):\n    total = 0\n    ", "\n    return total\n", "python")
    text = "for v in values:\n        total += v"
    assert trim_to_parsing(text, context) == text


def test_trim_to_parsing_leaves_text_alone_when_nothing_qualifies() -> None:
    # The suffix is broken in a way no cut of the completion can match: keep the answer.
    context = Context("def f(values):\n    ", "\n    return total +\n", "python")
    text = "total = 0\n    total += 1"
    assert trim_to_parsing(text, context) == text


def test_trim_to_parsing_without_a_parser_is_the_identity() -> None:
    context = Context("x = ", "\n", "no-such-language")
    assert trim_to_parsing("1\n(((", context) == "1\n((("


# --- tree-sitter (other languages, when the grammar package is installed) ---------------------


def test_tree_sitter_javascript_trimming() -> None:
    pytest.importorskip("tree_sitter_javascript")
    assert has_parser("javascript")
    assert parse_error("function f() { return 1; }\n", "javascript") is None
    assert parse_error("function f() { return (1; }\n", "javascript") is not None
    context = Context("function sum(a) {\n  let t = 0;\n  ", "\n  return t;\n}\n", "javascript")
    text = "for (const x of a) {\n    t += x;\n  }\n  foo("
    assert trim_to_parsing(text, context) == "for (const x of a) {\n    t += x;\n  }"


def test_tree_sitter_missing_grammar_degrades_to_no_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    import langserver.completion.postprocess.syntax as syntax

    monkeypatch.setitem(syntax._GRAMMARS, "klingon", ("tree_sitter_klingon", "language"))
    assert not has_parser("klingon")
    assert trim_to_parsing("a\n(((", Context("", "", "klingon")) == "a\n((("
