"""Step 3, strip_leading_newlines: line breaks before the answer on a blank line or mid-line."""

from __future__ import annotations

from langserver.completion.postprocess import multiline
from langserver.completion.postprocess.indent import columns, infer_style, leading
from langserver.completion.postprocess.policy import Policy
from langserver.completion.postprocess.repeats import strip_typed_prefix
from langserver.completion.postprocess.syntax import has_parser, parse_error, parse_region, scan
from langserver.completion.stages.context import Context


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
