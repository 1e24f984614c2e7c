"""The gate's first-line fallback replayed on recorded answers (bench/gate_fallback.py): a block the gate
hides for its unsure tail gives way to its first line when that line alone passes; a block that passes,
or whose first line is unsure too, is left as the gate leaves it. No vLLM: scripted streams."""

from __future__ import annotations

from bench import gate_fallback
from langserver.completion.stages.confidence import Delta

GATE = 0.005


def stream(first_line: float, tail: float) -> list[Delta]:
    """`a = 1` then `b = 2`, the first line's tokens at log probability `first_line`, the tail's at `tail`."""
    return [Delta("a = 1", (("a = 1", first_line),)), Delta("\n", (("\n", -0.01),)),
            Delta("b = 2", (("b = 2", tail),)), Delta("", (("<end>", -0.01),), "stop")]


def test_a_block_hidden_for_its_unsure_tail_shows_its_sure_first_line() -> None:
    assert gate_fallback.first_line_fallback("a = 1\nb = 2", stream(-0.5, -8.0), "stop", GATE) == "a = 1"


def test_a_block_the_gate_passes_is_left_whole() -> None:
    assert gate_fallback.first_line_fallback("a = 1\nb = 2", stream(-0.5, -0.5), "stop", GATE) is None


def test_an_unsure_first_line_is_hidden_with_its_block() -> None:
    assert gate_fallback.first_line_fallback("a = 1\nb = 2", stream(-6.0, -8.0), "stop", GATE) is None


def test_one_line_is_the_gates_alone() -> None:
    assert gate_fallback.first_line_fallback("a = 1", stream(-8.0, -8.0)[:1], "stop", GATE) is None


def test_the_table_counts_what_the_fallback_adds() -> None:
    record = {"format": "chat-fim", "split": "single-line", "cut": "line"}
    rows = [(record, ((False, False), (True, True))), (record, ((True, True), (True, True))),
            (record, ((False, False), (True, False)))]
    line = gate_fallback.table(rows, GATE).splitlines()[-1]
    assert line.split("|")[1:] == ["     1 /   1 ", "     3 /   2 ", "   2 /   1"], line
