"""The streaming layer's early stop: would more text change what the clean-up shows?"""

from __future__ import annotations

from langserver.completion.postprocess import multiline
from langserver.completion.postprocess.fence import FENCE_LINE, MARKUP_LANGUAGES, is_preamble
from langserver.completion.postprocess.newlines import strip_leading_newlines
from langserver.completion.postprocess.policy import Policy
from langserver.completion.postprocess.special_tokens import PARTIAL_SPECIAL, SPECIAL, strip_leading_tokens
from langserver.completion.stages.context import Context


def is_complete(text: str, context: Context, policy: Policy) -> bool:
    """The streaming layer's early stop: would more text change what `clean` shows?

    Judged on the answer as the first steps unwrap it, so that a fence line or a
    sentence before the code does not count as the single line, and a closing fence
    or a leaked end token ends it."""
    text = strip_leading_tokens(text)  # an echoed FIM token or role header is not the answer
    if SPECIAL.search(text):
        return True  # everything after a leaked token is cut anyway
    if PARTIAL_SPECIAL.fullmatch(text):
        return False  # a token still arriving
    lines = text.split("\n")
    opening = next((i for i, line in enumerate(lines) if FENCE_LINE.match(line)), None)
    if opening is not None and is_preamble(lines[:opening]) and context.language not in MARKUP_LANGUAGES:
        if any(FENCE_LINE.match(line) for line in lines[opening + 1:-1]):
            return True  # the closing fence: the rest is prose
        text = "\n".join(lines[opening + 1:])
    elif opening is None and len(lines) <= 4 and is_preamble(lines[:-1]) and any(line.strip() for line in lines[:-1]):
        return False  # a sentence so far: the code (fenced or not) is still to come
    text = strip_leading_newlines(text, context, policy)
    return multiline.is_complete(text, context, policy)
