"""tabby-agent's mid-line rule replayed on recorded answers (bench/midline_rule.py): with text right of the
cursor, an answer that goes on to another line shows nothing unless its first line ends with that text; the
table counts only tasks with text right of the cursor. No vLLM: scripted records."""

from __future__ import annotations

from typing import Any

from bench import midline_rule, quality_model


def _record(prefix: str, middle: str, suffix: str, deltas: list[str], server: str) -> dict[str, Any]:
    case = quality_model.Case("repo", "mid-line", "t", prefix, middle, suffix)
    return {"split": "repo", "cut": "mid-line", "task": "t", "case": case.__dict__, "format": "chat-fim",
            "deltas": deltas, "server": [server, 0]}


def test_an_answer_that_runs_past_the_line_shows_nothing_under_the_rule() -> None:
    record = _record("x = f(", "a", ")\nprint(x)\n", ["a\n", "print(x)"], "a")
    assert midline_rule.judge(record) == ((True, True, (1, 1)), (False, False, (0, 0)))


def test_a_first_line_that_ends_with_the_rest_of_the_line_is_kept() -> None:
    record = _record("x = f(", "a", ")\nprint(x)\n", ["a)\n", "print(x)"], "a")
    assert midline_rule.judge(record) == ((True, True, (1, 1)), (True, True, (1, 1)))


def test_at_the_end_of_a_line_the_rule_does_nothing_and_the_table_leaves_the_task_out() -> None:
    record = _record("x = ", "f(a)", "\nprint(x)\n", ["f(a)\n", "print(x)"], "f(a)")
    row = midline_rule.judge(record)
    assert row == ((True, True, (1, 1)), (True, True, (1, 1)))
    assert "chat-fim" not in midline_rule.table([(record, row)])
    assert "chat-fim repo        mid-line      1 |" in midline_rule.table([(_record("x = f(", "a", ")\n", ["a"], "a"),
                                                                         row)])


def test_the_tasks_of_the_sample_a_rule_was_found_on_can_be_left_out() -> None:
    found = _record("x = f(", "a", ")\n", ["a\n", "b"], "a")
    other = {**_record("y = g(", "b", ")\n", ["b\n", "c"], "b"), "task": "u"}
    assert [record["task"] for record, _ in midline_rule.judged([found, other], [found])] == ["u"]
    assert len(midline_rule.judged([found, other], [])) == 2
