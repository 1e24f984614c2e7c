"""LSP sessions that need no model: bad settings and a missing vLLM must not hurt."""

from __future__ import annotations

import sys
from pathlib import Path

from lsprotocol import types

from tests.conftest import StartServer

DEAD_BACKEND = {"mode": "external", "url": "http://127.0.0.1:9/v1"}  # nothing listens on port 9


async def test_invalid_settings_fall_back_with_a_message_naming_the_key(lsp_server: StartServer) -> None:
    client = await lsp_server({
        "backend": DEAD_BACKEND,
        "completion": {"maxTokens": "lots", "multiline": "sometimes", "timeoutMs": 2000},
        "vllm": {"port": 70000},
        "bogus": 1,
    }, timeout=30)
    status = await client.command("vllmGhost.status")
    settings = status["settings"]
    assert settings["completion"]["maxTokens"] == 128  # the default
    assert settings["completion"]["multiline"] == "auto"
    assert settings["completion"]["timeoutMs"] == 2000  # the valid key next to them still applies
    assert settings["vllm"]["port"] == 0
    warnings = " ".join(m.message for m in client.messages)
    for key in ("completion.maxTokens", "completion.multiline", "vllm.port", "vllmGhost.bogus"):
        assert key in warnings, key


async def test_missing_vllm_command_is_an_error_status_not_a_crash(lsp_server: StartServer) -> None:
    client = await lsp_server({"vllm": {"command": ["/nonexistent/vllm", "serve"]}, "model": {"path": "/tmp/x"}},
                              wait_for=("error",), timeout=30)
    status = await client.wait_status("error")  # the one start_session waited for
    assert "not found" in status["message"] and "vllm.command" in status["message"]
    assert [m.type for m in client.messages].count(types.MessageType.Error) == 1
    uri = client.open("def f():\n    return ")
    assert await client.complete(uri, 1, 11) == []
    assert (await client.command("vllmGhost.status"))["state"] == "error"
    await client.close_session()
    assert client._server is not None and client._server.returncode == 0


async def test_vllm_failing_at_start_reports_its_reason(lsp_server: StartServer) -> None:
    fail = "import sys; print('OSError: /models/missing does not exist', file=sys.stderr); sys.exit(1)"
    client = await lsp_server({"vllm": {"command": [sys.executable, "-c", fail]}, "model": {"path": "/models/missing"}},
                              wait_for=("error",), timeout=30)
    status = await client.wait_status("error")  # the one start_session waited for
    assert "vllmGhost.model.path" in status["message"]
    assert any("does not exist" in line for line in status["detail"]["lastLines"])


async def test_disabled_completions_and_languages_return_nothing_at_once(lsp_server: StartServer) -> None:
    client = await lsp_server({"backend": DEAD_BACKEND, "completion": {"disabledLanguages": ["markdown"]}},
                              wait_for=())  # asks at once: a disabled language needs no backend
    uri = client.open("# Title\n\nSome ", language="markdown")
    assert await client.complete(uri, 2, 5) == []


async def test_stdio_flag_that_lsp_clients_append_is_accepted(lsp_server: StartServer) -> None:
    for args in (["--stdio"], ["lsp", "--stdio"]):
        client = await lsp_server({"backend": DEAD_BACKEND}, wait_for=(),
                                  argv=[sys.executable, "-m", "langserver", *args])
        assert client.initialize_result is not None
        assert client.initialize_result.capabilities.inline_completion_provider is not None


async def test_cross_file_context_follows_the_workspace_folders(tmp_path: Path, lsp_server: StartServer) -> None:
    """The files the server would put in a prompt (vllmGhost.status) come only from the
    client's workspace folders, and follow workspace/didChangeWorkspaceFolders."""
    root = tmp_path / "shop"
    (root / "pkg").mkdir(parents=True)
    helpers = "def parse_total(order):\n    return sum(order)\n"
    main = "from pkg.helpers import parse_total\n\ntotal = parse_total("
    for name, text in (("__init__.py", ""), ("helpers.py", helpers), ("main.py", main)):
        (root / "pkg" / name).write_text(text)
    (tmp_path / "elsewhere").mkdir()
    client = await lsp_server({"backend": DEAD_BACKEND, "completion": {"timeoutMs": 2000}},
                              root=tmp_path / "elsewhere", timeout=30)
    uri = client.open(main, uri=(root / "pkg" / "main.py").as_uri())
    await client.complete(uri, 2, len("total = parse_total("))  # the backend is dead: no answer
    assert (await client.command("vllmGhost.status"))["detail"]["crossFile"]["files"] == []  # not a folder
    client.workspace_did_change_workspace_folders(types.DidChangeWorkspaceFoldersParams(
        event=types.WorkspaceFoldersChangeEvent(added=[types.WorkspaceFolder(uri=root.as_uri(), name="shop")],
                                                removed=[])))
    client.edit(uri, (2, 0), (2, 0), "")  # a new request, not the superseded one
    await client.complete(uri, 2, len("total = parse_total("))
    assert (await client.command("vllmGhost.status"))["detail"]["crossFile"]["files"] == ["pkg/helpers.py"]
