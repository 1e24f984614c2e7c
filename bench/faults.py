#!/usr/bin/env python3
"""Run the fault-injection suite (pytest -m faults) and print what each fault did:
survived? / time to recover / processes left.

Usage: scripts/bench-faults [--model DIR] [--report FILE] [-- PYTEST_ARGS...]
       scripts/bench-faults --table FILE     (print a saved report only)

The suite runs with this interpreter, against real vLLM (CPU build, the tiny test
model: --model, default $VLLM_GHOST_TEST_MODEL) and the scripted OpenAI-compatible
server for faults on cue. Each fault test appends one JSON row to the report
($VLLM_GHOST_FAULT_REPORT; a temporary file unless --report): fault, survived,
recovery_s (seconds from the fault until served again, or until the last process
was gone for the deaths of the language server), left (processes left behind),
note. The exit status is pytest's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import markdown_table

ROOT = Path(__file__).resolve().parent.parent


def table(rows: list[dict[str, object]]) -> str:
    cells = []
    for row in rows:
        recovery = row.get("recovery_s")
        cells.append((
            row["fault"],
            "yes" if row["survived"] else "NO",
            "-" if recovery is None else f"{float(str(recovery)):.2f} s",
            row.get("left", 0),
            row.get("note", ""),
        ))
    return markdown_table(("fault", "survived", "recovered in", "left", "note"), cells, aligned=True)


def read(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.environ.get("VLLM_GHOST_TEST_MODEL", ""),
                        help="the tiny test model (default: $VLLM_GHOST_TEST_MODEL)")
    parser.add_argument("--report", type=Path, help="keep the JSON-lines report here")
    parser.add_argument("--table", type=Path, help="only print the table of a saved report")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args()
    if args.table:
        print(table(read(args.table)))
        return 0
    if not args.model or not (Path(args.model) / "config.json").is_file():
        print("bench-faults: no test model: pass --model DIR or set VLLM_GHOST_TEST_MODEL "
              "(scripts/make-test-model DIR builds one)", file=sys.stderr)
        return 2
    report = args.report or Path(tempfile.mkstemp(prefix="vllm-ghost-faults-", suffix=".jsonl")[1])
    report.write_text("", encoding="utf-8")
    env = {**os.environ, "VLLM_GHOST_TEST_MODEL": str(args.model), "VLLM_GHOST_FAULT_REPORT": str(report)}
    started = time.monotonic()
    code = subprocess.call([sys.executable, "-m", "pytest", "-m", "faults", "-q", "-rxX", *args.pytest_args],
                           cwd=ROOT, env=env)
    took = time.monotonic() - started
    rows = read(report)
    print()
    print(table(rows))
    survived = sum(1 for row in rows if row["survived"])
    print(f"\n{survived} of {len(rows)} faults survived; suite took {took:.0f} s (pytest exit {code}); "
          f"report: {report}")
    return code


if __name__ == "__main__":
    sys.exit(main())
