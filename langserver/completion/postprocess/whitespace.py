"""Step 10, strip_trailing_whitespace: spaces at line ends, line breaks at the end."""

from __future__ import annotations

from langserver.completion.postprocess.policy import Policy
from langserver.completion.postprocess.syntax import continuation_lines, scan
from langserver.completion.stages.context import Context


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
