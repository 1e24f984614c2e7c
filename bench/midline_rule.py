"""tabby-agent's mid-line rule replayed on a model run's records (issue 24): with text right of the cursor,
an answer of several lines is dropped unless its first line ends with that text (tabby-agent 1.5.0's
`trimMultiLineInSingleLineMode`, the first filter of its clean-up chain). Per split with text right of the
cursor: what the server showed and what it would show with the rule, pass@1 (repo: exact match) and the
share of shown lines that are lines of the reference. The records are `scripts/bench-quality --model ...
--records FILE`'s (or a GPU run's); their streams are whole answers, so the rule sees what the model meant
to write after the line break. Nothing asks a model.

    python -m bench.midline_rule --records records-quality.jsonl [--leave-out FOUND.jsonl]

`--leave-out` drops the tasks another record file holds (the sample the rule was found on), so that what
is left is held out.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench import quality_model

# One task: (shown, right, (shown lines, reference lines among them)) without and with the rule.
Row = tuple[tuple[bool, bool, tuple[int, int]], tuple[bool, bool, tuple[int, int]]]


def line_suffix(case: dict[str, Any]) -> str:
    """The text right of the cursor on its line."""
    return str(case["suffix"]).split("\n", 1)[0]


def drops(raw: str, line_suffix: str) -> bool:
    """The rule: text right of the cursor, a second line with something on it, and a first line that does
    not end with the text right of the cursor."""
    first, _, rest = raw.partition("\n")
    return bool(line_suffix.strip()) and bool(rest.strip()) and not first.rstrip().endswith(line_suffix.rstrip())


def judge(record: dict[str, Any]) -> Row | None:
    """The live server's answer to one record, and the same under the rule (None: a failed task)."""
    if record.get("error"):
        return None
    case = quality_model.Case(**record["case"])
    judgement = quality_model.Judge(case)
    text, replace = record["server"] or ("", 0)

    def cell(shown_text: str) -> tuple[bool, bool, tuple[int, int]]:
        shown = bool(shown_text.strip())
        return shown, judgement.right(shown_text, replace), judgement.surviving(shown_text) if shown else (0, 0)

    now = cell(text)
    ruled = cell("") if drops("".join(record["deltas"]), line_suffix(record["case"])) else now
    return now, ruled


def table(rows: list[tuple[dict[str, Any], Row]]) -> str:
    groups: dict[tuple[str, str, str], list[Row]] = defaultdict(list)
    for record, row in rows:
        if line_suffix(record["case"]).strip():
            groups[(record["format"], record["split"], record["cut"])].append(row)
    lines = ["tasks with text right of the cursor: shown / pass@1 (repo: exact match) / share of shown lines that "
             "are reference lines, the server as it is -> with the rule",
             f"{'format':<9}{'split':<12}{'cut':<9}{'tasks':>6} | {'as it is':>26} | {'with the rule':>26}"]
    for (prompt_format, split, cut), group in sorted(groups.items()):
        cells = []
        for side in (0, 1):
            shown = sum(row[side][0] for row in group)
            right = sum(row[side][1] for row in group)
            total = sum(row[side][2][0] for row in group)
            kept = sum(row[side][2][1] for row in group)
            cells.append(f"{shown:>5} / {right:>4} / {kept:>4} of {total:<5} {100 * kept / max(1, total):5.2f}%")
        lines.append(f"{prompt_format:<9}{split:<12}{cut:<9}{len(group):>6} | {cells[0]} | {cells[1]}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=Path, required=True, help="bench-quality --model --records FILE")
    parser.add_argument("--leave-out", type=Path, help="records whose tasks are left out (where the rule was found)")
    args = parser.parse_args()
    found = quality_model.read_records(args.leave_out) if args.leave_out else []
    print(table(judged(quality_model.read_records(args.records), found)))
    return 0


def judged(records: list[dict[str, Any]], found: list[dict[str, Any]]) -> list[tuple[dict[str, Any], Row]]:
    """Each record's row, leaving out failed tasks, the tasks `found` holds and those without text right of
    the cursor (the rule cannot act there, and judging them runs their tests for nothing)."""
    left_out = {quality_model.record_key(record) for record in found}
    rows = []
    for record in records:
        acts = line_suffix(record["case"]).strip() and quality_model.record_key(record) not in left_out
        row = judge(record) if acts else None
        if row is not None:
            rows.append((record, row))
    return rows


if __name__ == "__main__":
    sys.exit(main())
