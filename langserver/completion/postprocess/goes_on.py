"""The cursor's block goes on below it: lines after the first go between the line being written and code that exists.

Used by the line confidence (multiline.keep_sure_lines). Where the suffix's next
non-blank line stands at or right of the cursor line's indentation, the user is
writing inside code the document already has (a new line in a function body, a
parameter list, a class's fields): the line at the cursor is what they are
writing, and each line the completion adds after it is new code pushed in front of
the code below. A small model there mostly writes another version of that code
(the next parameter again, a second `return`, a method the class already has), so
a later line stays only if the model was sure of it (GOES_ON_CONFIDENCE). At the
end of a block, where the suffix's next line is less indented or there is none,
the line confidence's own threshold decides, as before: that is where a block is
written whole. Copilot's client draws the same line (it asks for several lines only
where `isEmptyBlockStart` finds an empty block at the cursor); here a block the
model is certain of (a scripted one) still stays whole inside code.
"""

from __future__ import annotations

from langserver.completion.postprocess.indent import columns, infer_style, leading
from langserver.completion.stages.context import Context

# The probability a later line needs where the block goes on below the cursor. Chosen on
# HumanEval single-line, cursor after the indentation (the line confidence's tuning split), among
# 0.3, 0.5, 0.7 and 1 (one line there), with the line confidence at 0.02-0.2: 0.5, 0.7 and 1 tie
# at the most passing tasks and the highest share of right lines, 0.3 is below them, and 0.5
# keeps a block the model is sure of. Held out: the other splits (docs/benchmarks.md, issue 24).
GOES_ON_CONFIDENCE = 0.5


def line_below(context: Context) -> str | None:
    """The suffix's next non-blank line after the cursor's line, if any."""
    return next((text for text in context.suffix.split("\n")[1:] if text.strip()), None)


def block_goes_on(context: Context) -> bool:
    """Does the suffix's next non-blank line stand at or right of the cursor line's indentation?"""
    following = line_below(context)
    if following is None:
        return False
    width = infer_style(context).width
    return columns(leading(following), width) >= columns(leading(context.line_prefix), width)
