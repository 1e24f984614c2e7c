from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from langserver.document import TextBuffer

TEXT = st.lists(st.sampled_from(["a", "b", " ", "\n", "\r", "\r\n", "é", "世", "🚀", "\u2028", "\x0c"]),
                max_size=30).map("".join)


def lsp_lines(text: str) -> list[str]:
    """Reference: LSP splits at \\n, \\r\\n and \\r only."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def test_form_feed_and_line_separator_are_not_line_breaks() -> None:
    buffer = TextBuffer("a\x0cb\u2028c\nd")
    assert buffer.line_count == 2
    assert buffer.offset_at(1, 0) == 6


def test_utf16_columns_after_astral_characters() -> None:
    buffer = TextBuffer("x = '🚀世'\ny")
    # 🚀 is two UTF-16 units: the closing quote is at column 7, code point 6.
    assert buffer.offset_at(0, 7) == 7 - 1
    assert buffer.position_at(6) == (0, 7)
    assert buffer.offset_at(0, 6) == 5  # inside the surrogate pair: rounds down


def test_positions_past_the_end_clamp() -> None:
    buffer = TextBuffer("ab\r\ncd")
    assert buffer.offset_at(0, 99) == 2
    assert buffer.offset_at(9, 0) == 6


@given(TEXT, st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(0, 8), st.integers(0, 8), TEXT),
                      max_size=8))
def test_edits_match_a_reference_model(initial: str, edits: list[tuple[int, int, int, int, str]]) -> None:
    buffer = TextBuffer(initial)
    reference = initial
    for a, b, line_a, line_b, new in edits:
        start, end = sorted([(line_a, a), (line_b, b)])
        begin, finish = offset(reference, *start), offset(reference, *end)
        reference = reference[:begin] + new + reference[max(begin, finish):]
        buffer.replace(start, end, new)
        assert buffer.text == reference
        assert buffer.line_count == len(lsp_lines(reference))


def offset(text: str, line: int, character: int) -> int:
    lines = lsp_lines(text)
    if line >= len(lines):
        return len(text)
    starts = [0]
    for index, char in enumerate(text):
        if char == "\n" or (char == "\r" and text[index + 1: index + 2] != "\n"):
            starts.append(index + 1)
    units = 0
    position = starts[line]
    for char in lines[line]:
        width = 2 if ord(char) > 0xFFFF else 1
        if units + width > character:
            break
        units += width
        position += 1
    return position
