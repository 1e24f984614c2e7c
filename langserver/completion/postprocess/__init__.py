"""Stage 4: turn the model's raw answer into text that can be inserted at the cursor.

Each step is a small function `(text, context, policy) -> text` in a module of its own;
`STEPS` below is the chain, in order, and `clean` runs it and decides how much of the
rest of the line the item replaces. An empty result means "show nothing". A new step
goes in a module here and into `STEPS` at its place.

1. strip_special_tokens   leaked Qwen tokens (special_tokens.py)
2. strip_fence            a markdown fence and the prose around it (fence.py)
3. strip_leading_newlines line breaks before the answer on a blank line or mid-line (newlines.py)
4. strip_typed_prefix     the typed part of the cursor line repeated (repeats.py)
5. normalize_indentation  tabs vs spaces as the document has them (indentation.py, indent.py)
6. cut_repetition         a loop of repeated lines (repeats.py)
7. limit_lines            the multi-line policy: one line or up to the block end (multiline.py)
8. trim_suffix_overlap    the answer runs on into the text after the cursor (repeats.py); after
                          the line limit, so a single line that ends with the `)` after the
                          cursor is trimmed rather than made to replace it
9. trim_to_parsing        the longest cut that parses no worse than without it (syntax.py)
10. strip_trailing_whitespace (whitespace.py)

Every step is safe on a clean answer: cleaning a clean answer gives it back.
`is_complete` (early_stop.py) is the streaming layer's question to the same steps.
"""

from __future__ import annotations

from langserver.completion.postprocess.base import Completion, Step
from langserver.completion.postprocess.early_stop import is_complete
from langserver.completion.postprocess.fence import strip_fence
from langserver.completion.postprocess.indentation import normalize_indentation
from langserver.completion.postprocess.multiline import limit_lines, replace_chars
from langserver.completion.postprocess.newlines import strip_leading_newlines
from langserver.completion.postprocess.policy import Policy
from langserver.completion.postprocess.repeats import (
    cut_repetition,
    duplicates_suffix,
    strip_typed_prefix,
    trim_suffix_overlap,
)
from langserver.completion.postprocess.special_tokens import strip_special_tokens
from langserver.completion.postprocess.syntax import trim_to_parsing
from langserver.completion.postprocess.whitespace import strip_trailing_whitespace
from langserver.completion.stages.context import Context

__all__ = [
    "STEPS", "Completion", "Policy", "Step", "clean", "cut_repetition", "is_complete", "limit_lines",
    "normalize_indentation", "shown", "step_names", "strip_fence", "strip_leading_newlines", "strip_special_tokens",
    "strip_trailing_whitespace", "strip_typed_prefix", "trim_suffix_overlap", "trim_to_parsing",
]

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


def step_names(steps: tuple[Step, ...] = STEPS) -> list[str]:
    return [step.__name__ for step in steps]


def clean(raw: str, context: Context, policy: Policy | None = None,
          steps: tuple[Step, ...] = STEPS) -> Completion | None:
    policy = policy or Policy()
    text = raw
    for step in steps:
        text = step(text, context, policy)
    return shown(text, context)


def shown(text: str, context: Context) -> Completion | None:
    """What the editor shows for cleaned `text`: None when it is empty or all it would add is a
    second copy of the code after the cursor."""
    if not text.strip():
        return None
    replace = replace_chars(text, context)
    if not replace and duplicates_suffix(text, context):
        return None
    return Completion(text=text, replace_chars=replace)
