"""Text the model repeats: the typed part of the line, the text after the cursor, its own lines.

Each function is one clean-up step (`text, context, policy -> text`) or a
helper the streaming check shares.
"""

from __future__ import annotations

import re

from langserver.completion.postprocess.indent import columns, infer_style, leading, max_plausible_indent
from langserver.completion.postprocess.policy import Policy
from langserver.completion.postprocess.syntax import imbalance
from langserver.completion.stages.context import Context

_IDENTIFIER = re.compile(r"\w")
# Up to this many lines above the cursor line may be echoed before the typed part.
ECHO_LINES = 3
# A copy of the suffix's first line is only recognised when the line says something.
SIGNIFICANT_LINE = 6
# Lines of the suffix compared when looking for a copy of it inside the completion.
COPY_LINES = 3
# A loop: a block of up to this many lines, three times in a row.
MAX_PERIOD = 4


# --- the typed part of the cursor line --------------------------------------------------


def strip_typed_prefix(text: str, context: Context, policy: Policy | None = None) -> str:
    """Drop what the model repeated of the cursor line's typed part (and of the lines
    just above it): `    return` + `    return x` -> ` x`; `math.p` + `math.pi` -> `i`."""
    typed = context.line_prefix
    echoed = _strip_echoed_lines(text, context)
    if echoed is not None:
        return echoed
    if not typed or not text:
        return text
    if not typed.strip():
        return _strip_repeated_indent(text, context)
    for candidate in typed_candidates(typed):
        if text.startswith(candidate):
            return text[len(candidate):]
    return text


def typed_candidates(typed: str) -> list[str]:
    """Tails of the typed part the model may restart from, longest first: the whole line,
    the line without indentation, then each tail that starts after a non-word character
    and holds a word character (a lone `(` or `'` typed is more likely closed than repeated)."""
    # The whole line with its indentation is unambiguous even without a word in it.
    whole = [typed] if typed != typed.lstrip() else []
    candidates = [typed, typed.lstrip()]
    for index in range(len(typed) - 1, 0, -1):
        if not _IDENTIFIER.match(typed[index - 1]) and _IDENTIFIER.match(typed[index]):
            candidates.append(typed[index:])
    seen: set[str] = set()
    ordered = []
    for candidate in sorted(candidates, key=len, reverse=True):
        if candidate and candidate not in seen and (_IDENTIFIER.search(candidate) or candidate in whole):
            seen.add(candidate)
            ordered.append(candidate)
    return ordered


def _strip_echoed_lines(text: str, context: Context) -> str | None:
    """The model echoed the last lines before the cursor, then the typed part."""
    lines = context.prefix.split("\n")
    for count in range(min(ECHO_LINES, len(lines) - 1), 0, -1):
        echo = "\n".join(lines[-count - 1:])
        if text.startswith(echo) and len(echo.strip()) - len(context.line_prefix.strip()) >= SIGNIFICANT_LINE:
            rest = text[len(echo):]
            return rest
    return None


def _strip_repeated_indent(text: str, context: Context) -> str:
    """On an indented blank line the model may indent again: keep one indentation."""
    typed = context.line_prefix
    if not text.startswith(typed):
        return text
    style = infer_style(context)
    limit = max_plausible_indent(context, style)
    total = columns(typed + leading(text), style.width)
    if limit is not None and total > limit:
        return text[len(typed):]
    return text


# --- the text after the cursor ------------------------------------------------------------


def trim_suffix_overlap(text: str, context: Context, policy: Policy | None = None) -> str:
    """Cut where the completion runs into the text that already follows the cursor:
    the longest end of the completion that is a start of the suffix (any length, across
    lines), else a copy of the suffix's next lines further inside the completion."""
    if not context.suffix or not text:
        return text
    # Trailing whitespace may hide an overlap ("...return x\n\n" against "\n    return x\n"):
    # take whichever reading overlaps more of the suffix's actual text.
    best = max(((len(context.suffix[:size].strip()), size, candidate)
                for candidate in dict.fromkeys((text, text.rstrip()))
                if (size := _longest_overlap(candidate, context))), default=None)
    if best is not None:
        _, size, candidate = best
        return candidate[: len(candidate) - size]
    copy = find_suffix_copy(text, context)
    if copy is not None:
        return text[:copy].rstrip()
    return text


def _longest_overlap(text: str, context: Context) -> int:
    suffix = context.suffix
    if not suffix:
        return 0  # cursor at the end of the document: nothing to run into
    first = suffix[0]
    start = max(0, len(text) - len(suffix))
    while True:
        index = text.find(first, start)
        if index == -1:
            return 0
        size = len(text) - index
        if suffix.startswith(text[index:]) and _overlap_counts(text, size, context):
            return size
        start = index + 1


def _overlap_counts(text: str, size: int, context: Context) -> bool:
    """Is an overlap of `size` characters a real run into the suffix, not a coincidence?"""
    suffix = context.suffix
    overlap = suffix[:size]
    if not overlap.strip() or size == len(text):
        return True  # only whitespace, or nothing but a copy of what follows: drop it
    if "\n" in overlap:
        # Across lines: it must copy at least the rest of a line, or a good part of it.
        ends_line = size == len(suffix) or suffix[size] in "\r\n"
        last = overlap.rsplit("\n", 1)[-1].strip()
        return ends_line or overlap.count("\n") >= 2 or len(last) >= SIGNIFICANT_LINE
    # On the cursor line: closers and quotes are judged by balance (`f(a)` before `)`
    # is right, `a)` before `)` is not); a copy of the whole rest of the line counts.
    line = context.line_prefix + text
    rest = context.line_suffix
    if imbalance(line[: len(line) - size] + rest, context.language) < imbalance(line + rest, context.language):
        return True
    return overlap == rest and len(rest.strip()) >= 3


def find_suffix_copy(text: str, context: Context, final: bool = True) -> int | None:
    """Offset of a line of `text` that starts a copy of the suffix's next lines.

    The copy must run on: from there the completion's non-blank lines match the
    suffix's next non-blank lines, at least two of them, or all the completion has
    left (a short line such as `return False` alone recurs legitimately). The
    completion's last line may be a copy cut short by the token limit. While the answer
    still streams (`final` false) "all it has left" is no evidence yet: the next line may differ."""
    following = [line.rstrip() for line in context.suffix.split("\n")[1:] if line.strip()][:COPY_LINES]
    if not following or len(following[0].strip()) < SIGNIFICANT_LINE:
        return None
    lines = text.split("\n")
    offset = len(lines[0]) + 1
    for index in range(1, len(lines)):
        if lines[index].rstrip() == following[0]:
            rest = [line.rstrip() for line in lines[index:] if line.strip()]
            matched = _matching_lines(rest, following)
            if matched >= 2 or (final and matched == len(rest)) or matched == len(following):
                return offset
        offset += len(lines[index]) + 1
    return None


def _matching_lines(lines: list[str], following: list[str]) -> int:
    matched = 0
    for position, (have, want) in enumerate(zip(lines, following, strict=False)):
        if have == want or (position == len(lines) - 1 and want.startswith(have)):
            matched += 1
        else:
            break
    return matched


def duplicates_suffix(text: str, context: Context) -> bool:
    """Would inserting `text` (before the rest of the line) just repeat what follows the
    cursor? It starts with the whole suffix, or its first line is the suffix's next line."""
    suffix = context.suffix
    if not suffix.strip() or not text.strip():
        return False
    if text.startswith(suffix):
        return True
    # Its lines as they would stand in the document, indentation included, are the
    # suffix's next lines: nothing new. (One equal line in a longer answer is not a
    # copy: `return 0` then `if n == 1:` before `return 0` is a fill-in-the-middle answer.)
    body = text.lstrip("\r\n")
    lines = [line.rstrip() for line in ((context.line_prefix if body == text else "") + body).split("\n")
             if line.strip()]
    following = [line.rstrip() for line in suffix.split("\n")[1:] if line.strip()][: len(lines)]
    return bool(lines) and len(lines[0].strip()) >= SIGNIFICANT_LINE and lines == following


def runs_into_suffix(text: str, context: Context) -> bool:
    """Has the completion started to copy the text after the cursor (streaming check)?

    One line equal to the suffix's next line is not enough: a fill-in-the-middle answer
    often writes a line that recurs below (`return 'No'`) and goes on with other code, and
    stopping there would cut it. Two lines of the suffix in a row are a copy."""
    if find_suffix_copy(text, context, final=False) is not None:
        return True
    overlap = _longest_overlap(text.rstrip(), context)
    return overlap > 0 and context.suffix[:overlap].count("\n") >= 2 and bool(context.suffix[:overlap].strip())


# --- the model's own lines ----------------------------------------------------------------


def cut_repetition(text: str, context: Context | None = None, policy: Policy | None = None) -> str:
    """Cut a degenerate loop and keep one copy: a line four times in a row, or a block of
    2-4 lines three times (code repeats a line twice or three times on purpose)."""
    lines = text.split("\n")
    for index in range(len(lines)):
        for period in range(1, MAX_PERIOD + 1):
            block = lines[index:index + period]
            if len(block) < period or not any(_IDENTIFIER.search(line) for line in block):
                continue
            copies = 4 if period == 1 else 3
            full = all(lines[index + k * period:index + (k + 1) * period] == block for k in range(1, copies - 1))
            last = lines[index + (copies - 1) * period:index + copies * period]
            if full and _starts_copy(last, block):
                return "\n".join(lines[:index + period])
    return text


def _starts_copy(candidate: list[str], block: list[str]) -> bool:
    """The third copy may be cut short by the token limit."""
    if not candidate:
        return False
    full = candidate[:-1] == block[: len(candidate) - 1]
    return full and bool(candidate[-1].strip()) and block[len(candidate) - 1].startswith(candidate[-1])
