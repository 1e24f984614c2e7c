"""Typing-through cache: a bounded LRU of shown completions keyed on prefix AND suffix.

When the user types characters that match the completion on screen, the rest of
it is the answer: no backend request, no debounce. Continue keys on the prefix
alone and so serves stale text after the code below the cursor changed; here an
entry matches only when the text after the cursor is the same too.

An entry remembers where its cursor was (`anchor`), the KEY_CHARS characters
before it and after it, and the completion. A request at `offset` matches when
- the KEY_CHARS characters after the cursor equal the entry's suffix (typing
  inserts before the suffix, so it does not move),
- the text between the anchor and the cursor is the start of the completion
  (what the user typed through), and not all of it,
- the KEY_CHARS characters before the anchor are the entry's prefix.
KEY_CHARS bounds the key to about what the model sees of the file (the context
window), so a 5 MB document costs no more than a small one. An edit above that
shifts offsets is a miss, never a wrong answer.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from langserver.completion.postprocess import Completion

# About the model's context window (2048 tokens of code is roughly 8,000 characters).
KEY_CHARS = 8192
SIZE = 100


@dataclass(frozen=True)
class Entry:
    anchor: int  # cursor offset (code points) the completion was made for
    prefix: str  # the KEY_CHARS characters before the anchor
    suffix: str  # the KEY_CHARS characters after the anchor
    completion: Completion


class CompletionCache:
    def __init__(self, size: int = SIZE, key_chars: int = KEY_CHARS) -> None:
        self.size = size
        self.key_chars = key_chars
        self._entries: OrderedDict[tuple[str, str], Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _prefix(self, text: str, offset: int) -> str:
        return text[max(0, offset - self.key_chars):offset]

    def _suffix(self, text: str, offset: int) -> str:
        return text[offset:offset + self.key_chars]

    def put(self, text: str, offset: int, completion: Completion) -> None:
        """Remember a completion shown at `offset` of `text`."""
        if not completion.text:
            return
        entry = Entry(offset, self._prefix(text, offset), self._suffix(text, offset), completion)
        key = (entry.prefix, entry.suffix)
        self._entries.pop(key, None)
        self._entries[key] = entry
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def get(self, text: str, offset: int) -> Completion | None:
        """The rest of a cached completion the user is typing through at `offset`, or None."""
        suffix = self._suffix(text, offset)
        for key, entry in reversed(self._entries.items()):
            rest = self._typed_through(entry, text, offset, suffix)
            if rest is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return rest
        self.misses += 1
        return None

    def _typed_through(self, entry: Entry, text: str, offset: int, suffix: str) -> Completion | None:
        # Cheapest checks first: most entries differ in the suffix or the anchor.
        if entry.suffix != suffix:
            return None
        typed = offset - entry.anchor
        shown = entry.completion.text
        if not 0 <= typed < len(shown):
            return None
        if text[entry.anchor:offset] != shown[:typed]:
            return None
        if self._prefix(text, entry.anchor) != entry.prefix:
            return None
        return Completion(text=shown[typed:], replace_chars=entry.completion.replace_chars)
