"""The benchmarks' result tables: one Markdown table printer, so that every bench prints rows
that paste into docs/benchmarks.md alike; and the GPU reading a result's machine line names."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Sequence


def gpu_reading(fields: str = "name") -> str:
    """nvidia-smi's `--query-gpu=FIELDS` (one line a GPU), or "" without a GPU or nvidia-smi."""
    try:
        return subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], aligned: bool = False) -> str:
    """`header` and `rows` as a Markdown table, one line each; a row shorter than the header gets
    empty cells. `aligned`: cells padded to their column's width (read in a terminal), the last
    column left as it is (a note of any length)."""
    lines = [[str(cell) for cell in header]]
    lines += [[str(cell) for cell in row] + [""] * (len(header) - len(row)) for row in rows]
    if aligned:
        widths = [max(len(line[column]) for line in lines) for column in range(len(header) - 1)] + [0]
        lines = [[cell.ljust(width) for cell, width in zip(line, widths, strict=True)] for line in lines]
        rule = "|" + "|".join("-" * (max(width, 3) + 2) for width in widths) + "|"
    else:
        rule = "|" + "---|" * len(header)
    rendered = ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join([rendered[0], rule, *rendered[1:]])
