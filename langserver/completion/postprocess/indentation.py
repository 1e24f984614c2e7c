"""Step 5, normalize_indentation: tabs vs spaces as the document has them (indent.py)."""

from __future__ import annotations

from langserver.completion.postprocess.indent import IndentStyle, infer_style, leading, restyle
from langserver.completion.postprocess.policy import Policy
from langserver.completion.postprocess.syntax import has_parser, no_worse, parse_region
from langserver.completion.stages.context import Context


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
