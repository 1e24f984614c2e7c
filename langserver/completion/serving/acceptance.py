"""Whether ghost text pays off, measured on this machine only (issue 27, item 4).

Per language: completions shown, accepted, accepted characters, and characters still
in the document RETAIN_S after the acceptance (Copilot now judges itself by
accepted-and-retained characters, not by suggestions shown), plus the latency of the
shown ones. Nothing here leaves the process: `vllmGhost.status` and the status item's
tooltip show it, and the counts die with the server.

How an acceptance is known: every item the server returns carries a command naming its
id (the server adds it); the editor runs it when the user accepts the item, and the
server calls `accepted`. What is retained is judged by `retained_chars`, in plain text.
"""

from __future__ import annotations

import difflib
import itertools
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from langserver.completion.stages.timings import percentile

RETAIN_S = 30.0
# Shown items remembered for their acceptance; older ones can no longer be counted.
REMEMBER = 256
LATENCIES = 500  # per language, for the percentiles
# How far around the accepted text its remains are looked for (the user edits near it).
RETAIN_SLACK = 200
MIN_RUN = 4


@dataclass(frozen=True)
class Shown:
    """One item the editor was given: where, what, in which language."""

    id: str
    uri: str
    language: str
    text: str
    offset: int  # where the text goes, in code points of the document at that time


@dataclass
class LanguageStats:
    shown: int = 0
    accepted: int = 0
    accepted_chars: int = 0
    checked_chars: int = 0  # accepted characters whose RETAIN_S check has run
    retained_chars: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCIES))

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"shown": self.shown, "accepted": self.accepted,
                               "acceptedChars": self.accepted_chars, "retainedChars": self.retained_chars,
                               "checkedChars": self.checked_chars}
        if self.shown:
            out["acceptRate"] = round(self.accepted / self.shown, 3)
        if self.checked_chars:
            out["retainRate"] = round(self.retained_chars / self.checked_chars, 3)
        if self.latencies_ms:
            values = sorted(self.latencies_ms)
            out["latencyMs"] = {"p50": round(percentile(values, 50), 1), "p95": round(percentile(values, 95), 1),
                                "n": len(values)}
        return out


class Acceptance:
    """The counters, and the shown items whose acceptance may still come."""

    def __init__(self) -> None:
        self.languages: dict[str, LanguageStats] = {}
        self._shown: OrderedDict[str, Shown] = OrderedDict()
        self._ids = itertools.count(1)

    def _stats(self, language: str) -> LanguageStats:
        return self.languages.setdefault(language or "unknown", LanguageStats())

    def show(self, uri: str, language: str, text: str, offset: int, latency_ms: float | None,
             new: bool = True) -> Shown:
        """An item goes to the editor: count it and remember it under a new id. Not `new`: the
        rest of a completion the user is typing through, or an explicit request's second and
        third alternatives (seen only if the user cycles to them): not counted as shown (nor
        timed), but an acceptance of them counts."""
        shown = Shown(f"g{next(self._ids)}", uri, language, text, offset)
        stats = self._stats(language)
        if new:
            stats.shown += 1
            if latency_ms is not None:
                stats.latencies_ms.append(latency_ms)
        self._shown[shown.id] = shown
        while len(self._shown) > REMEMBER:
            self._shown.popitem(last=False)
        return shown

    def accept(self, item_id: str, chars: int | None = None) -> Shown | None:
        """The editor accepted item `item_id` (`chars` of it for a partial accept; all by
        default). None when the id is unknown or already counted in full."""
        shown = self._shown.pop(item_id, None)
        if shown is None:
            return None
        stats = self._stats(shown.language)
        stats.accepted += 1
        stats.accepted_chars += len(shown.text) if chars is None else max(0, min(chars, len(shown.text)))
        return shown

    def retained(self, shown: Shown, accepted_chars: int, document: str | None) -> int:
        """Record what is left of an accepted text RETAIN_S later (`document`: its text now,
        None when it was closed: nothing is known, nothing is counted)."""
        if document is None:
            return 0
        kept = retained_chars(shown.text[:accepted_chars], document, shown.offset)
        stats = self._stats(shown.language)
        stats.checked_chars += accepted_chars
        stats.retained_chars += kept
        return kept

    def summary(self) -> dict[str, Any]:
        total = LanguageStats()
        for stats in self.languages.values():
            total.shown += stats.shown
            total.accepted += stats.accepted
            total.accepted_chars += stats.accepted_chars
            total.checked_chars += stats.checked_chars
            total.retained_chars += stats.retained_chars
            total.latencies_ms.extend(stats.latencies_ms)
        return {"total": total.to_wire(),
                "byLanguage": {name: stats.to_wire() for name, stats in sorted(self.languages.items())},
                "retainAfterS": RETAIN_S}


def retained_chars(text: str, document: str, offset: int) -> int:
    """How many characters of `text`, inserted at `offset`, are still there: all of them when
    the document around that place still holds it; else the runs of at least MIN_RUN
    characters it has in common with it, in order (difflib's matching blocks; shorter runs
    are as likely chance as what is left of the text). Edits before the place shift it; the
    window's slack absorbs some of them."""
    if not text:
        return 0
    start = max(0, offset - RETAIN_SLACK)
    window = document[start:offset + len(text) + RETAIN_SLACK]
    if text in window:
        return len(text)
    matcher = difflib.SequenceMatcher(None, text, window, autojunk=False)
    return sum(block.size for block in matcher.get_matching_blocks() if block.size >= MIN_RUN)
