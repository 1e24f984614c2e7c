"""LSP sessions that need no model: bad settings and a missing vLLM must not hurt."""

from __future__ import annotations

import sys
from pathlib import Path

from lsprotocol import types

from bench.lsp import GhostClient


async def test_invalid_settings_fall_back_with_a_message_naming_the_key() -> None:
    client = GhostClient()
    await client.launch()
    await client.open_session({
        "backend": {"mode": "external", "url": "http://127.0.0.1:9/v1"},
        "completion": {"maxTokens": "lots", "multiline": "sometimes", "timeoutMs": 2000},
        "vllm": {"port": 70000},
        "bogus": 1,
    })
    await client.wait_status("ready", "error", timeout=30)
    status = await client.command("vllmGhost.status")
    settings = status["settings"]
    assert settings["completion"]["maxTokens"] == 128  # the default
    assert settings["completion"]["multiline"] == "auto"
    assert settings["completion"]["timeoutMs"] == 2000  # the valid key next to them still applies
    assert settings["vllm"]["port"] == 0
    warnings = " ".join(m.message for m in client.messages)
    for key in ("completion.maxTokens", "completion.multiline", "vllm.port", "vllmGhost.bogus"):
        assert key in warnings, key
    await client.close_session()


async def test_missing_vllm_command_is_an_error_status_not_a_crash() -> None:
    client = GhostClient()
    await client.launch()
    await client.open_session({"vllm": {"command": ["/nonexistent/vllm", "serve"]}, "model": {"path": "/tmp/x"}})
    status = await client.wait_status("error", timeout=30)
    assert "not found" in status["message"] and "vllm.command" in status["message"]
    assert [m.type for m in client.messages].count(types.MessageType.Error) == 1
    uri = client.open("def f():\n    return ")
    assert await client.complete(uri, 1, 11) == []
    assert (await client.command("vllmGhost.status"))["state"] == "error"
    await client.close_session()
    assert client._server is not None and client._server.returncode == 0


async def test_vllm_failing_at_start_reports_its_reason() -> None:
    client = GhostClient()
    await client.launch()
    fail = "import sys; print('OSError: /models/missing does not exist', file=sys.stderr); sys.exit(1)"
    await client.open_session({"vllm": {"command": [sys.executable, "-c", fail]}, "model": {"path": "/models/missing"}})
    status = await client.wait_status("error", timeout=30)
    assert "vllmGhost.model.path" in status["message"]
    assert any("does not exist" in line for line in status["detail"]["lastLines"])
    await client.close_session()


async def test_disabled_completions_and_languages_return_nothing_at_once() -> None:
    client = GhostClient()
    await client.launch()
    await client.open_session({"backend": {"mode": "external", "url": "http://127.0.0.1:9/v1"},
                               "completion": {"disabledLanguages": ["markdown"]}})
    uri = client.open("# Title\n\nSome ", language="markdown")
    assert await client.complete(uri, 2, 5) == []
    await client.close_session()


async def test_stdio_flag_that_lsp_clients_append_is_accepted() -> None:
    for args in (["--stdio"], ["lsp", "--stdio"]):
        client = GhostClient()
        await client.start_io(sys.executable, "-m", "langserver", *args)
        result = await client.open_session({"backend": {"mode": "external", "url": "http://127.0.0.1:9/v1"}})
        assert result.capabilities.inline_completion_provider is not None
        await client.close_session()


async def test_cross_file_context_follows_the_workspace_folders(tmp_path: Path) -> None:
    """The files the server would put in a prompt (vllmGhost.status) come only from the
    client's workspace folders, and follow workspace/didChangeWorkspaceFolders."""
    root = tmp_path / "shop"
    (root / "pkg").mkdir(parents=True)
    helpers = "def parse_total(order):\n    return sum(order)\n"
    main = "from pkg.helpers import parse_total\n\ntotal = parse_total("
    for name, text in (("__init__.py", ""), ("helpers.py", helpers), ("main.py", main)):
        (root / "pkg" / name).write_text(text)
    (tmp_path / "elsewhere").mkdir()
    client = GhostClient()
    await client.launch()
    await client.open_session({"backend": {"mode": "external", "url": "http://127.0.0.1:9/v1"},
                               "completion": {"timeoutMs": 2000}}, root=tmp_path / "elsewhere")
    await client.wait_status("ready", "error", timeout=30)
    uri = client.open(main, uri=(root / "pkg" / "main.py").as_uri())
    await client.complete(uri, 2, len("total = parse_total("))  # the backend is dead: no answer
    assert (await client.command("vllmGhost.status"))["detail"]["crossFile"]["files"] == []  # not a folder
    client.workspace_did_change_workspace_folders(types.DidChangeWorkspaceFoldersParams(
        event=types.WorkspaceFoldersChangeEvent(added=[types.WorkspaceFolder(uri=root.as_uri(), name="shop")],
                                                removed=[])))
    client.edit(uri, (2, 0), (2, 0), "")  # a new request, not the superseded one
    await client.complete(uri, 2, len("total = parse_total("))
    assert (await client.command("vllmGhost.status"))["detail"]["crossFile"]["files"] == ["pkg/helpers.py"]
    await client.close_session()
