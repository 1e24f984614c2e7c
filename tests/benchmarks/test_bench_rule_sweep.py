"""The sweep that chooses a clean-up rule's constant on recorded streams (bench/rule_sweep.py): a value
decides what the replayed server shows, and the table says it per split. No vLLM: a scripted record."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench import quality_model, rule_sweep
from langserver.completion.postprocess import multiline

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT.parent / "shared" / "models" / "small-coder-v2"
pytestmark = pytest.mark.skipif(not (MODEL / "config.json").is_file(),
                                reason="small-coder-v2 not beside the repository")


def _record() -> dict[str, object]:
    """The model completes the cursor's line surely, then writes a line that dedents to where the suffix's
    next line stands, at probability 0.2: kept only where the dedent rule asks for less than 0.2."""
    case = quality_model.Case("repo", "line", "t", "def f(x):\n    if x:\n        ", "return False",
                              "\n    return True\n")
    return {"split": "repo", "cut": "line", "task": "t", "case": case.__dict__, "format": "chat-fim",
            "deltas": ["return False", "\n    return None"],
            "logprobs": [[["return", 0.0], [" False", 0.0]],
                         [["\n", 0.0], ["    return", math.log(0.2)], [" None", 0.0]]],
            "finish": "stop", "options": quality_model.options(MODEL, "http://127.0.0.1:9", "chat-fim"),
            "max_model_len": 3072}


def test_the_constant_decides_what_the_replayed_server_shows_and_is_put_back() -> None:
    before = vars(multiline)["DEDENT_CONFIDENCE"]
    cells = rule_sweep.judge_values(_record(), "DEDENT_CONFIDENCE", [0.1, 0.3])
    assert cells == {0.1: (False, (2, 1)), 0.3: (True, (1, 1))}  # the extra line costs the exact match
    assert vars(multiline)["DEDENT_CONFIDENCE"] == before
    assert rule_sweep.judge_values({**_record(), "error": "timeout"}, "DEDENT_CONFIDENCE", [0.3]) is None


def test_the_table_gives_each_value_per_split(tmp_path: Path) -> None:
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps(_record()) + "\n")
    run = subprocess.run([sys.executable, "-m", "bench.rule_sweep", "--records", str(records), "--constant",
                          "DEDENT_CONFIDENCE", "--values", "0.1", "0.3", "--jobs", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    row = next(line for line in run.stdout.splitlines() if line.startswith("chat-fim"))
    assert [cell.strip() for cell in row.split("|")[1:]] == ["0 / 50.00", "1 / 100.00"], run.stdout
