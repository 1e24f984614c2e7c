"""Stage 4: turn the model's raw answer into text that can be inserted at the cursor.

Each step is a small function `(text, context, policy) -> text`; `clean` runs
them in order (`STEPS`) and decides how much of the rest of the line the item
replaces. An empty result means "show nothing". The steps, in order:

1. strip_special_tokens   leaked Qwen tokens (FIM tokens are not "special" to the
                          tokenizer, so vLLM does not strip them)
2. strip_fence            a markdown fence and the prose around it (Qwen3-Coder issue 543)
3. strip_leading_newlines line breaks before the answer on a blank line or mid-line
4. strip_typed_prefix     the typed part of the cursor line repeated (repeats.py)
5. normalize_indentation  tabs vs spaces as the document has them (indent.py)
6. cut_repetition         a loop of repeated lines (repeats.py)
7. limit_lines            the multi-line policy: one line or up to the block end (multiline.py)
8. trim_suffix_overlap    the answer runs on into the text after the cursor (repeats.py); after
                          the line limit, so a single line that ends with the `)` after the
                          cursor is trimmed rather than made to replace it
9. trim_to_parsing        the longest cut that parses no worse than without it (syntax.py)
10. strip_trailing_whitespace

Every step is safe on a clean answer: cleaning a clean answer gives it back.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from langserver.completion import multiline
from langserver.completion.confidence import Confidence
from langserver.completion.context import Context
from langserver.completion.indent import IndentStyle, columns, infer_style, leading, restyle
from langserver.completion.multiline import limit_lines, replace_chars
from langserver.completion.policy import Policy
from langserver.completion.repeats import cut_repetition, duplicates_suffix, strip_typed_prefix, trim_suffix_overlap
from langserver.completion.syntax import (
    continuation_lines,
    has_parser,
    no_worse,
    parse_error,
    parse_region,
    scan,
    trim_to_parsing,
)

__all__ = ["STEPS", "Completion", "Policy", "Step", "clean", "is_complete", "step_names"]

# Qwen's template and FIM tokens (ids 151643-151664): none of them is ever code.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)
_SPECIAL = re.compile("|".join(re.escape(token) for token in SPECIAL_TOKENS))
# A role header the chat template puts after <|im_start|>.
_ROLE = re.compile(r"(system|user|assistant)[ \t]*\r?\n")
# A special token cut short at the end of a stream.
_PARTIAL_SPECIAL = re.compile(r"<\|[a-z_]*\|?$")
_FENCE_LINE = re.compile(r"^[ \t]*```[\w+#.-]*[ \t]*$")
_PROSE_LINE = re.compile(r"^[A-Za-z][^=;{}\[\]<>`]*$")
_MARKUP_LANGUAGES = {"markdown", "mdx", "plaintext", "restructuredtext", "asciidoc", ""}


@dataclass(frozen=True)
class Completion:
    text: str
    # Characters right of the cursor, on its line, that the completion replaces.
    replace_chars: int = 0
    # How sure the model was of `text` (confidence.py); None = not known. Not part of equality.
    confidence: Confidence | None = field(default=None, compare=False)


Step = Callable[[str, Context, Policy], str]


def strip_special_tokens(text: str, context: Context, policy: Policy) -> str:
    """Drop leaked Qwen tokens at the start (an echoed `<|fim_middle|>`, a role header),
    then cut at the first one after the answer: whatever follows it is not the middle."""
    text = strip_leading_tokens(text)
    match = _SPECIAL.search(text)
    if match is not None:
        text = text[: match.start()]
    partial = _PARTIAL_SPECIAL.search(text)
    return text if partial is None else text[: partial.start()]


def strip_leading_tokens(text: str) -> str:
    """The answer after the Qwen tokens (and role headers) a model echoes before the code."""
    while True:
        match = _SPECIAL.match(text)
        if match is None:
            return text
        text = text[match.end():]
        if match.group(0) == "<|im_start|>":
            role = _ROLE.match(text)
            text = text[role.end():] if role else text


def strip_fence(text: str, context: Context, policy: Policy) -> str:
    """Unwrap a markdown fence the chat model put around its answer, with any sentence
    before it and anything after the closing fence (Qwen3-Coder issue 543)."""
    if context.language in _MARKUP_LANGUAGES and context.language:
        return text
    lines = text.split("\n")
    opening = next((i for i, line in enumerate(lines) if _FENCE_LINE.match(line)), None)
    if opening is None or not _is_preamble(lines[:opening]):
        return text
    closing = next((i for i in range(opening + 1, len(lines)) if _FENCE_LINE.match(lines[i])), len(lines))
    return "\n".join(lines[opening + 1:closing])


def _is_preamble(lines: list[str]) -> bool:
    """Nothing, or a short sentence such as "Here is the completion:"."""
    content = [line.strip() for line in lines if line.strip()]
    if not content:
        return True
    return len(content) <= 3 and all(_PROSE_LINE.match(line) and len(line.split()) >= 3 for line in content)


def strip_leading_newlines(text: str, context: Context, policy: Policy) -> str:
    """A line break first is only meaningful at the end of a non-empty line (the answer
    starts on the next line); on a blank line or mid-line it would break the code.

    At the end of a non-empty line the user may also have paused mid-statement: where a
    parser exists, the break is kept when the next-line reading parses no worse than the
    code without the answer, else dropped when the same-line reading does."""
    if context.line_prefix.strip() and not context.line_suffix.strip():
        return text if _keeps_line_break(text, context) else text.lstrip("\r\n")
    body = text.lstrip("\r\n")
    if body == text or not context.line_prefix:
        return body
    # On an indented blank line the answer's own indentation after the break is the one to keep.
    return body[len(context.line_prefix):] if body.startswith(context.line_prefix) else body


def _keeps_line_break(text: str, context: Context) -> bool:
    body = text.lstrip("\r\n")
    if body == text or not has_parser(context.language):
        return True
    first = body.split("\n", 1)[0].rstrip()
    if not first.strip():
        return True  # nothing to judge yet
    prefix, suffix = parse_region(context)
    language = context.language
    if scan(prefix, language).stack:
        return False  # inside open brackets a line break is only spacing: the line goes on
    # A next line that leaves the enclosing function is no continuation the user asked for.
    inside = columns(leading(first), infer_style(context).width) >= multiline.block_floor(context)
    if inside and parse_error(prefix + "\n" + first + suffix, language) is None:
        return True
    if parse_error(prefix + strip_typed_prefix(first, context) + suffix, language) is None:
        return False
    # Neither parses alone: an unfinished cursor line (the code fails there without the
    # answer) goes on; a finished one is followed by the model's next line.
    error = parse_error(prefix + suffix, language)
    return error is None or error.offset < len(prefix) - len(context.line_prefix)


def normalize_indentation(text: str, context: Context, policy: Policy) -> str:
    """Indent the answer's lines with the document's characters (tabs or spaces).

    How wide the model meant a tab is unknowable; the document's width is the first
    guess, and where a parser exists the common widths are tried until the code parses
    (a document may mix 2- and 4-space indentation)."""
    style = infer_style(context, policy.tab_size, policy.insert_spaces)
    restyled = _restyle_lines(text, style)
    if restyled == text or style.use_tabs or policy.tab_size or not has_parser(context.language):
        return restyled
    prefix, suffix = parse_region(context)
    for width in dict.fromkeys((style.width, 4, 2, 8)):
        candidate = _restyle_lines(text, IndentStyle(use_tabs=False, width=width))
        if no_worse(prefix, candidate, suffix, context.language):
            return candidate
    return restyled


def _restyle_lines(text: str, style: IndentStyle) -> str:
    lines = text.split("\n")
    for index in range(1, len(lines)):
        whitespace = leading(lines[index])
        if whitespace:
            lines[index] = restyle(whitespace, style) + lines[index][len(whitespace):]
    return "\n".join(lines)


def strip_trailing_whitespace(text: str, context: Context, policy: Policy) -> str:
    """Spaces at line ends (not inside a multi-line string), and line breaks at the end
    unless text follows on the cursor line (then a final break moves that text down)."""
    lines = text.split("\n")
    in_string = continuation_lines(text, context.language, scan(context.line_prefix, context.language), True)
    for index in range(len(lines) - 1):
        if not in_string[index + 1]:
            line = lines[index]
            cr = "\r" if line.endswith("\r") else ""
            lines[index] = line.rstrip(" \t\r") + cr
    text = "\n".join(lines)
    if context.line_suffix.strip():
        return text
    return text.rstrip()


STEPS: tuple[Step, ...] = (
    strip_special_tokens,
    strip_fence,
    strip_leading_newlines,
    strip_typed_prefix,
    normalize_indentation,
    cut_repetition,
    limit_lines,
    trim_suffix_overlap,
    trim_to_parsing,
    strip_trailing_whitespace,
)


def is_complete(text: str, context: Context, policy: Policy) -> bool:
    """The streaming layer's early stop: would more text change what `clean` shows?

    Judged on the answer as the first steps unwrap it, so that a fence line or a
    sentence before the code does not count as the single line, and a closing fence
    or a leaked end token ends it."""
    text = strip_leading_tokens(text)  # an echoed FIM token or role header is not the answer
    if _SPECIAL.search(text):
        return True  # everything after a leaked token is cut anyway
    if _PARTIAL_SPECIAL.fullmatch(text):
        return False  # a token still arriving
    lines = text.split("\n")
    opening = next((i for i, line in enumerate(lines) if _FENCE_LINE.match(line)), None)
    if opening is not None and _is_preamble(lines[:opening]) and context.language not in _MARKUP_LANGUAGES:
        if any(_FENCE_LINE.match(line) for line in lines[opening + 1:-1]):
            return True  # the closing fence: the rest is prose
        text = "\n".join(lines[opening + 1:])
    elif opening is None and len(lines) <= 4 and _is_preamble(lines[:-1]) and any(line.strip() for line in lines[:-1]):
        return False  # a sentence so far: the code (fenced or not) is still to come
    text = strip_leading_newlines(text, context, policy)
    return multiline.is_complete(text, context, policy)


def step_names(steps: tuple[Step, ...] = STEPS) -> list[str]:
    return [step.__name__ for step in steps]


def clean(raw: str, context: Context, policy: Policy | None = None,
          steps: tuple[Step, ...] = STEPS) -> Completion | None:
    policy = policy or Policy()
    text = raw
    for step in steps:
        text = step(text, context, policy)
    if not text.strip():
        return None
    replace = replace_chars(text, context)
    if not replace and duplicates_suffix(text, context):
        return None  # all it would add is a second copy of the code after the cursor
    return Completion(text=text, replace_chars=replace)
