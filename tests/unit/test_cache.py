"""Typing-through cache: prefix AND suffix, the rest of the completion, bounded LRU."""

from __future__ import annotations

from langserver.completion.postprocess import Completion
from langserver.completion.serving.cache import CompletionCache

PREFIX = "def area(r):\n    return math.p"
SUFFIX = "\n\n\ndef other():\n    pass\n"
SHOWN = Completion("i * r * r")


def filled() -> CompletionCache:
    cache = CompletionCache()
    cache.put(PREFIX + SUFFIX, len(PREFIX), SHOWN)
    return cache


def test_same_place_gives_the_whole_completion() -> None:
    assert filled().get(PREFIX + SUFFIX, len(PREFIX)) == SHOWN


def test_typing_through_gives_the_rest() -> None:
    cache = filled()
    for typed in ("i", "i * ", "i * r * "):
        assert cache.get(PREFIX + typed + SUFFIX, len(PREFIX + typed)) == Completion(SHOWN.text[len(typed):])
    assert cache.hits == 3


def test_typing_something_else_misses() -> None:
    cache = filled()
    assert cache.get(PREFIX + "e" + SUFFIX, len(PREFIX) + 1) is None
    assert cache.misses == 1


def test_typing_all_of_it_misses() -> None:
    # Nothing left to show: the next completion must come from the model.
    assert filled().get(PREFIX + SHOWN.text + SUFFIX, len(PREFIX + SHOWN.text)) is None


def test_a_changed_suffix_misses() -> None:
    # Continue's prefix-only key would serve the stale completion here.
    changed = SUFFIX.replace("other", "circumference")
    assert filled().get(PREFIX + changed, len(PREFIX)) is None
    assert filled().get(PREFIX + "i" + changed, len(PREFIX) + 1) is None


def test_a_changed_prefix_misses() -> None:
    # Same length, so the anchor offset matches: the prefix key must tell them apart.
    other = PREFIX.replace("area", "arxa")
    assert filled().get(other + SUFFIX, len(other)) is None


def test_replace_chars_are_kept() -> None:
    cache = CompletionCache()
    prefix, suffix = "f(x", ")\n"
    cache.put(prefix + suffix, len(prefix), Completion(", y) -> int:", replace_chars=1))
    assert cache.get(prefix + ", " + suffix, len(prefix) + 2) == Completion("y) -> int:", replace_chars=1)


def test_bounded_lru_drops_the_least_recently_used() -> None:
    cache = CompletionCache(size=2)
    docs = [f"x{i} = " for i in range(3)]
    cache.put(docs[0], len(docs[0]), Completion("0"))
    cache.put(docs[1], len(docs[1]), Completion("1"))
    assert cache.get(docs[0], len(docs[0])) is not None  # 0 is now the most recent
    cache.put(docs[2], len(docs[2]), Completion("2"))
    assert len(cache) == 2
    assert cache.get(docs[1], len(docs[1])) is None
    assert cache.get(docs[0], len(docs[0])) is not None and cache.get(docs[2], len(docs[2])) is not None


def test_keys_are_bounded_on_a_huge_document() -> None:
    cache = CompletionCache(key_chars=100)
    filler = "y = 1\n" * 100_000
    text = filler + PREFIX + SUFFIX
    cache.put(text, len(filler + PREFIX), SHOWN)
    # An edit far above the key window that keeps offsets: still a hit.
    edited = "z" + text[1:]
    assert cache.get(edited[: len(filler + PREFIX)] + "i" + SUFFIX, len(filler + PREFIX) + 1) == Completion(
        SHOWN.text[1:])
