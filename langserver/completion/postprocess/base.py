"""What the clean-up returns, and the shape of one step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from langserver.completion.postprocess.policy import Policy
from langserver.completion.stages.confidence import Confidence
from langserver.completion.stages.context import Context


@dataclass(frozen=True)
class Completion:
    text: str
    # Characters right of the cursor, on its line, that the completion replaces.
    replace_chars: int = 0
    # How sure the model was of `text` (confidence.py); None = not known. Not part of equality.
    confidence: Confidence | None = field(default=None, compare=False)
    # The rest of an earlier completion the user is typing through (the cache's): not a new one.
    typed_through: bool = field(default=False, compare=False)


Step = Callable[[str, Context, Policy], str]
