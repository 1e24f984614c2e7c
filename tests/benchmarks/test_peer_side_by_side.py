"""bench-peer --ours: our per-task results beside the peer's, on the tasks both ran only, with the
paired interval that says whether a gap is more than noise, and the share's two halves (right and
wrong lines shown a hundred tasks)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bench.peer import side_by_side


def scores(passed: bool, lines: tuple[int, int]) -> dict[str, Any]:
    return {"pass": passed, "exact": passed, "shown": bool(lines[0]), "lines": list(lines)}


def test_rows_pair_the_same_tasks_and_a_clear_lead_has_an_interval_above_zero(tmp_path: Path) -> None:
    ours = [{"format": "chat-fim", "split": "single-line", "cut": "line", "task": f"T/{i}",
             "scores": {"replay": scores(True, (1, 1)), "server": scores(False, (2, 0))}} for i in range(40)]
    ours.append({"format": "chat-fim", "split": "single-line", "cut": "line", "task": "only-ours",
                 "scores": {"replay": scores(False, (3, 0))}})
    peer = [{"format": "chat-fim", "split": "single-line", "cut": "line", "task": f"T/{i}",
             **scores(i < 10, (1, int(i < 10)))} for i in range(40)]
    (tmp_path / "ours.json").write_text(json.dumps(ours))
    table = side_by_side(peer, tmp_path / "ours.json")
    row = next(line for line in table.splitlines() if line.startswith("chat-fim"))
    # 40 shared tasks (the one only we ran is left out); the replay column is ours, 100% against 25%.
    match = re.match(r"chat-fim\s+single-line\s+line\s+40 \|\s+100\.0\s+25\.0\s+\+(\S+)\.\.\+(\S+) \|"
                     r"\s+100\.00\s+25\.00\s+\+(\S+)\.\.\+(\S+) \|\s+100/0\s+25/75$", row)
    assert match, table
    assert float(match.group(1)) > 0 and float(match.group(3)) > 0
