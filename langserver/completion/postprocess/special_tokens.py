"""Step 1, strip_special_tokens: leaked Qwen tokens. FIM tokens are not "special" to the
tokenizer, so vLLM does not strip them; none of them is ever code."""

from __future__ import annotations

import re

from langserver.completion.postprocess.policy import Policy
from langserver.completion.stages.context import Context

# Qwen's template and FIM tokens (ids 151643-151664).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)
SPECIAL = re.compile("|".join(re.escape(token) for token in SPECIAL_TOKENS))
# A role header the chat template puts after <|im_start|>.
_ROLE = re.compile(r"(system|user|assistant)[ \t]*\r?\n")
# A special token cut short at the end of a stream.
PARTIAL_SPECIAL = re.compile(r"<\|[a-z_]*\|?$")


def strip_special_tokens(text: str, context: Context, policy: Policy) -> str:
    """Drop leaked Qwen tokens at the start (an echoed `<|fim_middle|>`, a role header),
    then cut at the first one after the answer: whatever follows it is not the middle."""
    text = strip_leading_tokens(text)
    match = SPECIAL.search(text)
    if match is not None:
        text = text[: match.start()]
    partial = PARTIAL_SPECIAL.search(text)
    return text if partial is None else text[: partial.start()]


def strip_leading_tokens(text: str) -> str:
    """The answer after the Qwen tokens (and role headers) a model echoes before the code."""
    while True:
        match = SPECIAL.match(text)
        if match is None:
            return text
        text = text[match.end():]
        if match.group(0) == "<|im_start|>":
            role = _ROLE.match(text)
            text = text[role.end():] if role else text
