"""A line the suffix already answers: the block leaves the cursor's block for one the suffix goes on in.

Used by the line confidence (multiline.keep_sure_lines). On a blank line the model
often writes the line at the cursor, then dedents and writes the code after the
cursor's block (`return False`, then `    else:` or `    return False`). Where the
suffix's next line already stands at or left of that dedented line's indentation,
that is code the document already has at that level: the completion would put a
second version of it before it. The block ends before such a line unless the model
was sure of it (DEDENT_CONFIDENCE, above the line confidence's own threshold): a
scripted or certain block stays whole. A dedented line
with no code after it in the suffix (the cursor's block ends the function) is kept:
there the model may be finishing the function, as a fill-in-the-middle answer must.
"""

from __future__ import annotations

from langserver.completion.postprocess.goes_on import line_below
from langserver.completion.postprocess.indent import columns, infer_style, leading
from langserver.completion.stages.context import Context

# The probability a unit that dedents to the suffix's level needs to stay. Chosen on
# HumanEval single-line, cursor after the indentation, both formats, for the most passing
# tasks (ties: the lowest); held out: the other splits. First at lineConfidence 0.2, among
# 0.25, 0.3, 0.5; again at 0.03 (2026-12-07, `python -m bench.rule_sweep`, 0.03-1.01 on
# an H100 run's records): every value from 0.3 up passes the most in both formats, with the
# highest share of right lines (docs/benchmarks.md, issue 24).
DEDENT_CONFIDENCE = 0.3


def dedents_to_suffix(line: str, context: Context) -> bool:
    """Does `line` (a later line of a completion) dedent below the cursor line to where
    the suffix's next non-blank line already stands?"""
    if not line.strip():
        return False
    following = line_below(context)
    if following is None:
        return False
    width = infer_style(context).width
    depth = columns(leading(line), width)
    return depth < columns(leading(context.line_prefix), width) and columns(leading(following), width) <= depth
