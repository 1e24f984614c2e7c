"""The clean-up's policy: what the post-processing stages need from the settings and the editor.

A module of its own so multiline.py, repeats.py and syntax.py can all take a
`Policy` without importing each other for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Multiline = Literal["auto", "always", "never"]


@dataclass(frozen=True)
class Policy:
    """What the clean-up needs from the settings and the editor."""

    multiline: Multiline = "auto"
    tab_size: int | None = None  # the editor's formatting options, when known
    insert_spaces: bool | None = None
