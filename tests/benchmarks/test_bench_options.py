"""The benchmarks' shared option builder and table printer (bench/options.py, bench/report.py):
every bench's settings are ones the server takes without a warning (a misspelt key would be
dropped with a message, and the bench would measure the default instead), and every table row
has its header's columns."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from bench import crossfile, faults, gate, gpu_managed, gpu_spec, gpu_typists, quality_model, typing_replay
from bench.lsp import NotReady, start_session
from bench.options import dotted_options, server_options
from bench.report import markdown_table
from bench.vllm_process import VllmServer, external_options, managed_options
from langserver.settings import parse_settings
from tests.fault_tools import external_scripted_options, managed_scripted_options

MODEL = Path("/models/some-coder")
SERVER = VllmServer(url="http://127.0.0.1:8000", api_key="key", process=None)  # type: ignore[arg-type]
GPU_ARGS = argparse.Namespace(model=str(MODEL), name="coder", prompt_format="raw-fim", arg=["--max-model-len=4096"],
                              env=["VLLM_USE_V1=1"], command="vllm serve", max_tokens=64, timeout=900.0,
                              debounce_ms=-1, context_tokens=2048,
                              server_options=dotted_options(["backend.priority=-10", "backend.cacheSalt=false"]))

BUILT: dict[str, dict[str, Any]] = {
    "managed (tests)": managed_options(MODEL, maxTokens=16),
    "external (tests)": external_options(SERVER, debounceMs=0),
    "scripted external (fault tests)": external_scripted_options("http://127.0.0.1:9", "key"),
    "scripted managed (fault tests)": managed_scripted_options("--flag", healthIntervalS=1),
    "bench-crossfile": crossfile.options(MODEL, "raw-fim", ["open", "imports"]),
    "bench-crossfile, no cross-file": crossfile.options(MODEL, "raw-fim", None),
    "bench-typing": typing_replay.options(MODEL, 50, 32, block_size=16, cross_file=True, min_confidence=0.3),
    "bench-gate": gate.options(SERVER, MODEL, "chat-fim"),
    "bench-quality": quality_model.options(MODEL, SERVER.url, "chat-fim", multiline="always"),
    "bench-gpu managed": gpu_managed.options(GPU_ARGS),
    "bench-gpu typists": gpu_typists.options({"url": SERVER.url, "model": str(MODEL)}, GPU_ARGS),
}


@pytest.mark.parametrize("name", list(BUILT))
def test_each_benchs_options_are_settings_the_server_takes(name: str) -> None:
    settings, problems = parse_settings(BUILT[name])
    assert problems == []
    assert settings.model.name == BUILT[name]["model"]["name"]


def test_the_builder_chooses_the_backend_by_url_and_keeps_what_it_is_given() -> None:
    external = server_options("tiny", url="http://h:1", api_key_env="KEY", maxTokens=8)
    settings, problems = parse_settings(external)
    assert problems == [] and settings.backend.mode == "external" and settings.backend.url == "http://h:1/v1"
    assert settings.completion.max_tokens == 8
    managed, problems = parse_settings(server_options("tiny", model=MODEL, vllm={"args": ["--x"]}))
    assert problems == [] and managed.backend.mode == "managed" and tuple(managed.vllm.args) == ("--x",)
    # A --server-option lays over the bench's own settings, section by section.
    typists = BUILT["bench-gpu typists"]
    assert typists["backend"] == {"mode": "external", "url": SERVER.url + "/v1", "apiKeyEnv": "VLLM_API_KEY",
                                  "priority": -10, "cacheSalt": False}


def test_every_table_row_has_the_headers_columns() -> None:
    spec = {"none": {split: {"latency_ms": {"p50": 1, "p95": 2, "min": 0, "max": 3}, "ms_per_token": 0.1}
                     for split in gpu_spec.SPLITS},
            "suffix": {"skipped": "no proposer"}}
    faults_table = faults.table([{"fault": "vLLM killed", "survived": True, "recovery_s": 1.5, "note": "restarted"},
                                 {"fault": "x", "survived": False}])
    tables = [gpu_spec.table(spec), typing_replay.table([typing_replay.Row(policy="adaptive")]), faults_table,
              markdown_table(("a", "b", "c"), [(1,), (1, 2, 3)], aligned=True)]
    for table in tables:
        lines = table.splitlines()
        assert lines[1].replace("|", "").strip("-") == "", lines[1]  # the rule under the header
        assert {line.count("|") for line in lines} == {lines[0].count("|")}, table
    assert "| suffix | skipped: no proposer |" in tables[0]
    assert faults_table.splitlines()[2].startswith("| vLLM killed | yes      | 1.50 s       | 0    | restarted")


async def test_a_bench_whose_server_never_gets_ready_stops_with_the_reason() -> None:
    options = server_options("tiny", model="/tmp/x", vllm={"command": ["/nonexistent/vllm", "serve"]})
    # NotReady is a SystemExit: the bench ends with this line (exit status 1), not a traceback.
    with pytest.raises(NotReady, match=r"backend not ready: .*vllm\.command"):
        await start_session(options, timeout=30, require_ready=True)
