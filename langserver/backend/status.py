"""The backend state the user sees (status bar, `vllmGhost.status`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

State = Literal["starting", "loading", "ready", "error", "stopped", "disabled"]


@dataclass(frozen=True)
class Status:
    state: State
    message: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {"state": self.state, "message": self.message, "detail": dict(self.detail)}
