"""The peer benchmark (scripts/bench-peer): tabby-agent 1.5.0 over its language server, behind the
Tabby-API adapter, on real vLLM with the small code model (the session's, through --url): every
task gets an answer from the adapter (no vLLM errors) and the report has a row per cut, with every
task of it when two agents share them (`--concurrency`, as on a GPU), under a header naming the vLLM
that answered (a GPU's records are not labelled as this machine's)."""

from __future__ import annotations

import os
import re
import shutil
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


def missing() -> str:
    if not (MODEL / "config.json").is_file() or not DATA.is_dir():
        return "the small code model or the HumanEval-infilling data is not beside the repository"
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node and npm are needed for tabby-agent"
    return ""


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.skipif(bool(missing()), reason=missing() or "present")
def test_tabby_agent_answers_the_same_tasks_through_the_adapter(small_coder: VllmServer, tmp_path: Path) -> None:
    run = subprocess.run(
        [str(ROOT / "scripts" / "bench-peer"), "--model", str(MODEL), "--data", str(DATA),
         "--limit", "3", "--splits", "single-line", "--formats", "chat-fim", "--records", str(tmp_path / "r.jsonl"),
         "--url", small_coder.url, "--served-name", SMALL_CODER_NAME, "--concurrency", "2"],
        capture_output=True, text=True, timeout=900, check=False,
        env={**os.environ, "PYTHON": sys.executable, KEY_ENV: small_coder.api_key},
    )
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert re.search(r"chat-fim: the adapter answered [1-9]\d* completion requests, 0 vLLM errors", run.stderr), \
        run.stderr[-3000:]
    rows = re.findall(r"^chat-fim single-line (line|mid-line) +3 \|", run.stdout, re.MULTILINE)
    assert sorted(rows) == ["line", "mid-line"], run.stdout
    assert f"tabby-agent 1.5.0 (LSP) on model {MODEL.resolve()}" in run.stdout, run.stdout  # as bench-peer names it
    assert f"the vLLM at {small_coder.url}" in run.stdout, run.stdout
