"""The confidence gate on the whole shown answer, against a fallback to its first line, replayed on a model
run's records. The gate (`completion.minConfidence`) scores the whole shown answer, so a block whose later
lines the model was less sure of is hidden even where its first line alone would pass; the fallback shows
that first line instead. Per split: shown tasks and right ones (pass@1; repo: exact match) under each, and
how right the answers the fallback adds are. The records are `scripts/bench-quality --model ... --records
FILE`'s (or a GPU run's, `scripts/bench-gpu quality`); each stream is replayed through the server's pipeline
with its recorded settings, since the records keep the shown text but not its score. Nothing asks a model.

    python -m bench.gate_fallback --records records-quality.jsonl [--gate 0.005]
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import quality_model
from langserver.completion.stages.confidence import Delta, score
from langserver.settings import CompletionSettings

# One task: (shown, right) under the gate on the whole answer, and with the first-line fallback.
Row = tuple[tuple[bool, bool], tuple[bool, bool]]


def first_line_fallback(text: str, parts: Sequence[Delta], finish: str | None, gate: float) -> str | None:
    """The first line of a multi-line answer that the gate hides, when that line alone passes it."""
    if not text.strip() or "\n" not in text.strip("\n") or text.startswith("\n"):
        return None
    whole = score(parts, finish, text)
    if whole is None or whole.value >= gate:
        return None
    first = text.split("\n", 1)[0]
    alone = score(parts, finish, first)
    return first if first.strip() and alone is not None and alone.value >= gate else None


def judge(record: dict[str, Any], gate: float) -> Row | None:
    """The replayed server answer to one record under the gate, and with the fallback (None: a failed task)."""
    if record.get("error"):
        return None
    judgement = quality_model.Judge(quality_model.Case(**record["case"]))
    completion = quality_model.replay_record(record, quality_model.settings_of(record["options"]))
    if completion is None or not completion.text.strip():
        return (False, False), (False, False)
    passes = completion.confidence is None or completion.confidence.value >= gate
    whole = (passes, passes and judgement.right(completion.text, completion.replace_chars))
    finish = record.get("finish")
    parts = quality_model.recorded_parts(record["deltas"], record.get("logprobs"), finish)
    first = first_line_fallback(completion.text, parts, finish, gate)
    return whole, whole if first is None else (True, judgement.right(first, completion.replace_chars))


def table(rows: list[tuple[dict[str, Any], Row]], gate: float) -> str:
    groups: dict[tuple[str, str, str], list[Row]] = defaultdict(list)
    for record, row in rows:
        groups[(record["format"], record["split"], record["cut"])].append(row)
    lines = [f"gate {gate:g} on the whole shown answer -> with the first-line fallback: tasks shown / right "
             "(pass@1; repo: exact match); added: the fallback's extra shown tasks and the right ones among them",
             f"{'format':<9}{'split':<12}{'cut':<9}{'tasks':>6} | {'whole':>11} | {'fallback':>11} | {'added':>9}"]
    for (prompt_format, split, cut), group in sorted(groups.items()):
        counts = [(sum(row[side][0] for row in group), sum(row[side][1] for row in group)) for side in (0, 1)]
        added = (counts[1][0] - counts[0][0], counts[1][1] - counts[0][1])
        lines.append(f"{prompt_format:<9}{split:<12}{cut:<9}{len(group):>6} | {counts[0][0]:>5} / {counts[0][1]:>3} | "
                     f"{counts[1][0]:>5} / {counts[1][1]:>3} | {added[0]:>3} / {added[1]:>3}")
    return "\n".join(lines)


def _judged(record: dict[str, Any], gate: float) -> tuple[dict[str, Any], Row] | None:
    row = judge(record, gate)
    return None if row is None else ({key: record[key] for key in ("format", "split", "cut")}, row)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=Path, required=True, help="bench-quality --model --records FILE")
    parser.add_argument("--gate", type=float, default=CompletionSettings().min_confidence,
                        help="completion.minConfidence (default: the setting's default)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    records = quality_model.read_records(args.records)
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        judged = pool.map(functools.partial(_judged, gate=args.gate), records, chunksize=16)
    print(table([item for item in judged if item is not None], args.gate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
