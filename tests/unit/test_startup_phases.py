"""The start-up phases a user sees while vLLM loads, read off vLLM's own lines: managed starts on an
H100, as recorded on 2026-12-06: Qwen3-Coder-30B-A3B's shape (FP8, 162 s from start to ready) and
small-coder-v2 (bf16, 103 s)."""

from __future__ import annotations

from pathlib import Path

from langserver.backend.startup import phase_of

RECORDED = Path(__file__).resolve().parents[1] / "data" / "vllm-start" / "h100-qwen3-coder-30b-a3b-fp8.log"
SMALL = RECORDED.with_name("h100-small-coder-v2-bf16.log")


def phases(lines: list[str]) -> list[str]:
    seen: list[str] = []
    for line in lines:
        phase = phase_of(line)
        if phase is not None and (not seen or seen[-1] != phase):
            seen.append(phase)
    return seen


def test_the_h100_start_reads_as_its_phases_in_order() -> None:
    lines = RECORDED.read_text(encoding="utf-8").splitlines()
    assert phases(lines) == ["inspecting the model", "starting the engine", "reading the weights",
                             "compiling the model", "sizing the KV cache", "capturing CUDA graphs",
                             "finishing the engine", "starting the API server"]


def test_the_quiet_time_after_the_graphs_is_not_called_capturing() -> None:
    # small-coder-v2's first start: the graphs took 8 s, then vLLM printed nothing for 20 s
    # (19:46:47 to 19:47:07) before its API server. The status named that time "capturing CUDA
    # graphs"; vLLM was finishing its engine.
    lines = SMALL.read_text(encoding="utf-8").splitlines()
    assert phases(lines)[-3:] == ["capturing CUDA graphs", "finishing the engine", "starting the API server"]
    quiet = next(line for line in lines if "Free memory on device" in line)
    assert "19:46:47" in quiet and phase_of(quiet) == "finishing the engine"


def test_the_longest_phase_is_named_while_it_lasts() -> None:
    # torch.compile: 69 of the 162 s. Each line vLLM prints while it compiles names it.
    lines = RECORDED.read_text(encoding="utf-8").splitlines()
    compiling = [line for line in lines if "Dynamo bytecode" in line or "Compiling a graph" in line]
    assert compiling and all(phase_of(line) == "compiling the model" for line in compiling)
    assert phase_of("(APIServer pid=1) INFO [launcher.py:46] Route: /v1/completions, Methods: POST") is None
