"""Acceptance counting (issue 27, item 4): pure, no LSP, no model."""

from __future__ import annotations

from langserver.completion.serving.acceptance import REMEMBER, Acceptance, retained_chars

BEFORE = "def area(r):\n    return "
AFTER = "\n\nprint(area(2))\n"
TEXT = "math.pi * r ** 2"


def test_shown_accepted_and_characters_per_language() -> None:
    counts = Acceptance()
    first = counts.show("file:///a.py", "python", TEXT, len(BEFORE), 120.0)
    counts.show("file:///a.py", "python", "x", 3, 300.0)
    counts.show("file:///b.rs", "rust", "let y = 1;", 0, 80.0)
    assert counts.accept(first.id) == first
    assert counts.accept(first.id) is None, "one acceptance counts once"
    assert counts.accept("no-such-id") is None
    summary = counts.summary()
    python = summary["byLanguage"]["python"]
    assert (python["shown"], python["accepted"], python["acceptedChars"]) == (2, 1, len(TEXT))
    assert python["acceptRate"] == 0.5
    assert python["latencyMs"] == {"p50": 120.0, "p95": 300.0, "n": 2}
    assert summary["byLanguage"]["rust"]["accepted"] == 0
    assert summary["total"]["shown"] == 3 and summary["total"]["accepted"] == 1


def test_a_partial_accept_counts_its_characters_only() -> None:
    counts = Acceptance()
    shown = counts.show("u", "python", TEXT, 0, None)
    counts.accept(shown.id, chars=5)
    assert counts.summary()["total"]["acceptedChars"] == 5
    other = counts.show("u", "python", TEXT, 0, None)
    counts.accept(other.id, chars=10_000)  # never more than the item had
    assert counts.summary()["total"]["acceptedChars"] == 5 + len(TEXT)


def test_typing_through_is_not_a_new_suggestion_but_its_acceptance_counts() -> None:
    counts = Acceptance()
    counts.show("u", "python", TEXT, 0, 100.0)
    rest = counts.show("u", "python", TEXT[4:], 4, 1.0, new=False)
    counts.accept(rest.id)
    total = counts.summary()["total"]
    assert (total["shown"], total["accepted"], total["acceptedChars"]) == (1, 1, len(TEXT) - 4)
    assert total["latencyMs"]["n"] == 1


def test_retained_characters_after_the_user_edits() -> None:
    offset = len(BEFORE)
    kept = BEFORE + TEXT + AFTER
    assert retained_chars(TEXT, kept, offset) == len(TEXT)
    # Lines added above shift it; it is still there.
    assert retained_chars(TEXT, "import math\n\n" + kept, offset) == len(TEXT)
    # Part rewritten: the runs left count, the rewritten part does not.
    edited = BEFORE + "math.pi * radius ** 2" + AFTER
    assert retained_chars(TEXT, edited, offset) == len("math.pi * r") + len(" ** 2")
    # Deleted: chance matches of a letter or two in the code around do not count.
    assert retained_chars(TEXT, BEFORE + "0" + AFTER, offset) == 0


def test_retention_is_recorded_per_language_and_a_closed_document_counts_nothing() -> None:
    counts = Acceptance()
    kept = counts.show("u", "python", TEXT, len(BEFORE), None)
    counts.accept(kept.id)
    counts.retained(kept, len(TEXT), BEFORE + TEXT + AFTER)
    gone = counts.show("u", "python", TEXT, len(BEFORE), None)
    counts.accept(gone.id)
    counts.retained(gone, len(TEXT), BEFORE + "0" + AFTER)
    closed = counts.show("u", "python", TEXT, len(BEFORE), None)
    counts.accept(closed.id)
    counts.retained(closed, len(TEXT), None)
    python = counts.summary()["byLanguage"]["python"]
    assert python["checkedChars"] == 2 * len(TEXT) and python["retainedChars"] == len(TEXT)
    assert python["retainRate"] == 0.5


def test_old_items_are_forgotten_so_a_long_session_stays_small() -> None:
    counts = Acceptance()
    first = counts.show("u", "python", "a", 0, None)
    for _ in range(REMEMBER):
        counts.show("u", "python", "b", 0, None)
    assert counts.accept(first.id) is None
