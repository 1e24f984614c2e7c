"""A clean-up rule's constant replayed on a model run's records (issue 24): pass@1 (repo: exact match)
and the share of shown lines that are lines of the reference, per split, for each value, so that a
constant is chosen on the tuning split (HumanEval single-line, cursor after the indentation) with the
held-out splits printed beside it. The records are `scripts/bench-quality --model ... --records FILE`'s
(or a GPU run's, `scripts/bench-gpu quality`); nothing asks a model.

    python -m bench.rule_sweep --records records-quality.jsonl --constant DEDENT_CONFIDENCE \\
        --values 0.03 0.1 0.2 0.3 0.5 1.01

The constants are module globals of the multi-line stage (`postprocess/multiline.py` reads them at
each completion); a value above 1 turns a rule's exception off, one at or below `lineConfidence`
turns the rule off.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import quality_model
from langserver.completion.postprocess import multiline

CONSTANTS = ("DEDENT_CONFIDENCE", "GOES_ON_CONFIDENCE")

# One cell: passed (repo: exact) or not, (shown lines, reference lines among them).
Cell = tuple[bool, tuple[int, int]]


def judge_values(record: dict[str, Any], constant: str, values: Sequence[float]) -> dict[float, Cell] | None:
    """The server's answer to one record replayed with `constant` at each value (None: a failed task)."""
    if record.get("error"):
        return None
    case = quality_model.Case(**record["case"])
    judge = quality_model.Judge(case)
    settings = quality_model.settings_of(record["options"])
    kept = getattr(multiline, constant)
    cells: dict[float, Cell] = {}
    try:
        for value in values:
            setattr(multiline, constant, value)
            completion = quality_model.replay_record(record, settings)
            text, replace = ("", 0) if completion is None else (completion.text, completion.replace_chars)
            cells[value] = (judge.right(text, replace), judge.surviving(text) if text.strip() else (0, 0))
    finally:
        setattr(multiline, constant, kept)
    return cells


def table(results: list[tuple[dict[str, Any], dict[float, Cell]]], constant: str, values: Sequence[float]) -> str:
    groups: dict[tuple[str, str, str], list[dict[float, Cell]]] = defaultdict(list)
    for record, cells in results:
        groups[(record["format"], record["split"], record["cut"])].append(cells)
    width = 13
    head = f"{'format':8} {'split':11} {'cut':9} {'n':>5} | " + " | ".join(f"{v:g}".rjust(width) for v in values)
    lines = [f"{constant} replayed at each column's value: pass@1 tasks (repo: exact matches) / % of shown lines "
             "that are lines of the reference", "", head, "-" * len(head)]
    for (prompt_format, split, cut), rows in sorted(groups.items()):
        row_cells = []
        for value in values:
            right = sum(row[value][0] for row in rows)
            shown = sum(row[value][1][0] for row in rows)
            share = 100.0 * sum(row[value][1][1] for row in rows) / shown if shown else 0.0
            row_cells.append(f"{right} / {share:.2f}".rjust(width))
        lines.append(f"{prompt_format:8} {split:11} {cut:9} {len(rows):>5} | " + " | ".join(row_cells))
    return "\n".join(lines)


def _judge(job: tuple[dict[str, Any], str, Sequence[float]]) -> tuple[dict[str, Any], dict[float, Cell]] | None:
    record, constant, values = job
    cells = judge_values(record, constant, values)
    return None if cells is None else ({key: record[key] for key in ("format", "split", "cut")}, cells)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=Path, required=True)
    parser.add_argument("--constant", choices=CONSTANTS, required=True)
    parser.add_argument("--values", type=float, nargs="+", required=True)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    records = quality_model.read_records(args.records)
    jobs = [(record, args.constant, args.values) for record in records]
    if args.jobs > 1:
        with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
            judged = pool.map(_judge, jobs, chunksize=8)
    else:
        judged = [_judge(job) for job in jobs]
    results = [item for item in judged if item is not None]
    print(f"{len(results)} of {len(records)} records replayed ({args.records.name})", file=sys.stderr)
    print(table(results, args.constant, args.values))
    return 0


if __name__ == "__main__":
    sys.exit(main())
