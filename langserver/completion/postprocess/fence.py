"""Step 2, strip_fence: a markdown fence and the prose around it (Qwen3-Coder issue 543)."""

from __future__ import annotations

import re

from langserver.completion.postprocess.policy import Policy
from langserver.completion.stages.context import Context

FENCE_LINE = re.compile(r"^[ \t]*```[\w+#.-]*[ \t]*$")
_PROSE_LINE = re.compile(r"^[A-Za-z][^=;{}\[\]<>`]*$")
MARKUP_LANGUAGES = {"markdown", "mdx", "plaintext", "restructuredtext", "asciidoc", ""}


def strip_fence(text: str, context: Context, policy: Policy) -> str:
    """Unwrap a markdown fence the chat model put around its answer, with any sentence
    before it and anything after the closing fence (Qwen3-Coder issue 543)."""
    if context.language in MARKUP_LANGUAGES and context.language:
        return text
    lines = text.split("\n")
    opening = next((i for i, line in enumerate(lines) if FENCE_LINE.match(line)), None)
    if opening is None or not is_preamble(lines[:opening]):
        return text
    closing = next((i for i in range(opening + 1, len(lines)) if FENCE_LINE.match(lines[i])), len(lines))
    return "\n".join(lines[opening + 1:closing])


def is_preamble(lines: list[str]) -> bool:
    """Nothing, or a short sentence such as "Here is the completion:"."""
    content = [line.strip() for line in lines if line.strip()]
    if not content:
        return True
    return len(content) <= 3 and all(_PROSE_LINE.match(line) and len(line.split()) >= 3 for line in content)
