"""Neovim 0.12 end to end: the README's configuration, our server, the managed tiny model.

Neovim (from the Debian sid root of scripts/setup-editors) runs headless and embedded, driven
by pynvim. It loads examples/editors/init.lua (the README's block) with the server command and
settings replaced, opens the memorised example, and the test types as a user would in insert
mode: the ghost text appears as Neovim's inline-completion extmark, <Tab> (the configuration's
mapping of vim.lsp.inline_completion.get()) puts it in the buffer, vllmGhost.status answers
through Neovim's LSP client, and the configuration's :VllmGhostRestartModel (client:exec_cmd of
vllmGhost.restartModel) brings the model back with a new vLLM. Quitting Neovim stops everything.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pynvim
import pytest

from bench.vllm_process import example
from tests.editors import (
    EXAMPLE,
    EXAMPLES_DIR,
    SERVER_COMMAND,
    START_TIMEOUT_S,
    Workspace,
    configured,
    describe,
    editor_settings,
    editors_root,
    expected_after_accept,
    kill_all,
    make_workspace,
    save_artifact,
    wait_until_gone,
)

pytestmark = [pytest.mark.editors, pytest.mark.vllm]

GHOST_TIMEOUT_S = 60

# Runs in Neovim: one workspace/executeCommand through our client, synchronously.
EXECUTE_LUA = """
local command, timeout_ms = ...
local client = vim.lsp.get_clients({ name = "vllm_ghost" })[1]
if not client then return { error = "no vllm_ghost client" } end
local response, err = client:request_sync("workspace/executeCommand", { command = command, arguments = {} },
  timeout_ms, vim.api.nvim_get_current_buf())
if not response then return { error = tostring(err) } end
if response.err then return { error = response.err.message } end
return { result = response.result }
"""
# Runs in Neovim: the inline-completion extmarks of the current buffer with their text.
GHOST_LUA = """
local ns = vim.api.nvim_get_namespaces()["nvim.lsp.inline_completion"]
if not ns then return {} end
local found = {}
for _, mark in ipairs(vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })) do
  local text = ""
  for _, chunk in ipairs(mark[4].virt_text or {}) do text = text .. chunk[1] end
  table.insert(found, { row = mark[2], col = mark[3], text = text })
end
return found
"""
ATTACHED_LUA = 'return #vim.lsp.get_clients({ bufnr = 0, name = "vllm_ghost" })'


def neovim_init(test_model: Path) -> str:
    """examples/editors/init.lua with the test's server command and settings (and nothing else) replaced."""
    return configured((EXAMPLES_DIR / "init.lua").read_text(), {
        "cmd": (r"^local cmd = .*?$", f"local cmd = vim.json.decode([==[{json.dumps(SERVER_COMMAND)}]==])"),
        "settings": (r"^local settings = \{.*?^\}$",
                     f"local settings = vim.json.decode([==[{json.dumps(editor_settings(test_model))}]==])"),
    })


@dataclass
class Neovim:
    nvim: pynvim.Nvim
    workspace: Workspace
    timings: dict[str, float] = field(default_factory=dict)
    closed: bool = False

    def execute(self, command: str, timeout_s: float) -> Any:
        answer = self.nvim.exec_lua(EXECUTE_LUA, command, int(timeout_s * 1000))
        assert "error" not in answer, f"{command}: {answer['error']}"
        return answer["result"]

    def ready(self) -> bool:
        status = self.execute("vllmGhost.status", 10)
        assert status["state"] != "error", f"the server reports an error: {status}"
        return bool(status["state"] == "ready")

    def buffer_text(self) -> str:
        return "\n".join(self.nvim.current.buffer[:]) + "\n"


def wait_for(what: str, timeout_s: float, probe: Any) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def neovim(test_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Neovim]:
    editors_root()
    workspace = make_workspace(tmp_path_factory.mktemp("neovim"))
    (workspace.folder / ".git").mkdir()  # a project root, as the configuration's root_markers look for
    init = workspace.home / "init.lua"
    init.write_text(neovim_init(test_model))
    started = time.monotonic()
    nvim = pynvim.attach("child", argv=workspace.command(
        "nvim", "--embed", "--headless", "--clean", "-u", str(init), str(workspace.file)))
    session = Neovim(nvim, workspace)
    try:
        wait_for("the vllm_ghost client to attach", 60, lambda: nvim.exec_lua(ATTACHED_LUA) > 0)
        wait_for("vllmGhost.status to say ready", START_TIMEOUT_S, session.ready)
        session.timings["startToReady"] = round(time.monotonic() - started, 1)
        yield session
    finally:
        save_artifact("neovim-timings.json", session.timings)
        if not session.closed:
            with_suppressed_quit(nvim)
        kill_all(workspace.marker)


def with_suppressed_quit(nvim: pynvim.Nvim) -> None:
    # Neovim may be gone already (a failed test); the clean-up by marker follows either way.
    with contextlib.suppress(Exception):
        nvim.quit()
    with contextlib.suppress(Exception):
        nvim.close()


def test_root_markers_make_the_project_the_workspace_folder(neovim: Neovim) -> None:
    """Without a root, Neovim names no workspace folder and the server reads no other file (cross-file
    context is off): the configuration's root_markers find the project's .git."""
    folders = neovim.nvim.exec_lua(
        'local c = vim.lsp.get_clients({ name = "vllm_ghost" })[1]; '
        "return vim.tbl_map(function(f) return vim.uri_to_fname(f.uri) end, c.workspace_folders or {})")
    assert folders == [str(neovim.workspace.folder)]
    assert neovim.execute("vllmGhost.status", 10)["detail"].get("workspaceFolders") == [str(neovim.workspace.folder)]


def test_ghost_text_appears_in_insert_mode_and_tab_accepts_it(neovim: Neovim) -> None:
    nvim, case = neovim.nvim, example(EXAMPLE)
    line = case["prefix"].count("\n") + 1
    nvim.input(f"<Esc>{line}GA")  # insert mode at the end of "    return math."
    wait_for("insert mode", 10, lambda: nvim.api.get_mode()["mode"] == "i")
    typed_at = time.monotonic()
    nvim.input(case["prefix"][-1])
    # Entering insert mode may already have asked (Neovim's 200 ms debounce) for "math.": wait
    # for the ghost text of "math.p", and show what was there instead if it never comes.
    seen: list[Any] = []

    def ghost_of_typed() -> bool:
        seen[:] = nvim.exec_lua(GHOST_LUA)
        return any(mark["text"] == case["middle"] for mark in seen)

    try:
        wait_for("the ghost text extmark", GHOST_TIMEOUT_S, ghost_of_typed)
    except AssertionError as timeout:
        raise AssertionError(f"{timeout}; inline-completion extmarks: {seen}") from None
    neovim.timings["typedToGhost"] = round(time.monotonic() - typed_at, 2)
    column = len(case["prefix"].rsplit("\n", 1)[1].encode())
    assert seen == [{"row": line - 1, "col": column, "text": case["middle"]}]
    assert neovim.buffer_text() == case["prefix"] + case["suffix"], "the ghost text must not be in the buffer yet"

    nvim.input("<Tab>")
    wait_for("the accepted text in the buffer", 10, lambda: neovim.buffer_text() != case["prefix"] + case["suffix"])
    assert neovim.buffer_text() == expected_after_accept()
    assert nvim.api.get_mode()["mode"] == "i"
    assert tuple(nvim.current.window.cursor) == (line, column + len(case["middle"]))
    assert nvim.exec_lua(GHOST_LUA) == []  # the ghost text is gone once accepted
    nvim.input("<Esc>")
    # Neovim ran the item's command after inserting it: the server counted the acceptance (issue 27).
    def counted() -> bool:
        total = neovim.execute("vllmGhost.status", 10)["detail"]["acceptance"]["total"]
        return bool(total["accepted"] == 1 and total["acceptedChars"] == len(case["middle"]))

    wait_for("the acceptance counted by the server", 10, counted)


def test_status_and_the_configurations_restart_command(neovim: Neovim) -> None:
    status = neovim.execute("vllmGhost.status", 10)
    assert status["state"] == "ready", status
    old_pid = status["detail"]["pid"]
    states: list[str] = []

    def ready_again() -> bool:
        now = neovim.execute("vllmGhost.status", 10)
        states.append(now["state"])
        assert now["state"] != "error", now
        return bool(now["state"] == "ready" and now["detail"]["pid"] != old_pid)

    started = time.monotonic()
    # The README's :VllmGhostRestartModel sends workspace/executeCommand vllmGhost.restartModel.
    neovim.nvim.command("VllmGhostRestartModel")
    wait_for("ready with a new vLLM after :VllmGhostRestartModel", START_TIMEOUT_S, ready_again)
    neovim.timings["restartModel"] = round(time.monotonic() - started, 1)
    assert set(states) - {"ready"}, f"never saw the model restarting: {states}"


def test_quitting_neovim_stops_the_server_and_vllm(neovim: Neovim) -> None:
    neovim.closed = True
    with_suppressed_quit(neovim.nvim)
    left = wait_until_gone(neovim.workspace.marker, 60)
    assert not left, "left running after Neovim quit:\n" + describe(left)
    print("\nNeovim timings (s):", json.dumps(neovim.timings))
