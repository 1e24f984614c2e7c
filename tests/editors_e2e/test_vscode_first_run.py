"""First run without a server: the release VSIX (it carries the server's wheel) in code-server with no
server configured and none on PATH. The extension offers the install; a broken wheel makes pip fail
with a message carrying pip's last lines; Retry with the real wheel installs it into a venv in the
extension's global storage, with pip's lines as progress; the server starts from that venv, reaches
ready, shows the memorised ghost text, and starts from the venv again after Restart Server.

What the test affords: the venv gets the language server alone (the "Language server only" choice,
which a user with vLLM installed elsewhere or an external vLLM picks); vLLM itself is the project's
.venv, through vllm.command (the tests' usual settings). The `[gpu]` choice adds vLLM and a CUDA
PyTorch (gigabytes), which a test cannot download; tests/packaging/test_release.py checks that it resolves.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from bench.vllm_process import example
from tests.conftest import Release
from tests.vscode_harness import (
    Tools,
    cursor_of,
    ghost_settings,
    new_profile,
    processes_with,
    start_code_server,
    stop,
    tool_env,
    tools_fixture,  # noqa: F401  (the fixture `tools`)
)

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "vscode-first-run"
SCRIPT = ROOT / "tests" / "vscode" / "first_run.mjs"
EXAMPLE = "py_typed_char"
FILE_NAME = "circle.py"

pytestmark = [pytest.mark.vscode, pytest.mark.vllm]


def path_without_vllm_ghost(path: str) -> str:
    """PATH minus any directory holding a `vllm-ghost` (the project's .venv/bin when activated)."""
    return os.pathsep.join(part for part in path.split(os.pathsep) if part and not (Path(part) / "vllm-ghost").exists())


def test_first_run_installs_the_bundled_server(release: Release, tools: Tools, test_model: Path,
                                              tmp_path: Path) -> None:
    version = json.loads((ROOT / "vscode-client" / "package.json").read_text())["version"]
    vsix = release.dist / f"vllm-ghost-{version}.vsix"
    profile = new_profile(tmp_path, tools)
    profile.env["PATH"] = path_without_vllm_ghost(profile.env["PATH"])
    profile.env.pop("VIRTUAL_ENV", None)
    profile.install(tools, vsix)
    user_data, workspace = profile.user_data, profile.workspace
    wheels = list(profile.extensions.glob("vllm-ghost.vllm-ghost-*/server/vllm_ghost-*.whl"))
    assert len(wheels) == 1, list(profile.extensions.rglob("*"))[:20]

    # No vllmGhost.server.command: the first run finds no server.
    profile.write_settings(ghost_settings(
        test_model,
        # One slow start rather than a time-out and a restart when other jobs load the machine.
        **{"vllmGhost.vllm.startupTimeoutS": 900,
           "vllmGhost.vllm.idleGraceS": 30}))  # Restart Server rejoins the running vLLM
    case = example(EXAMPLE)
    (workspace / FILE_NAME).write_text(case["prefix"][:-1] + case["suffix"], encoding="utf-8")

    log = tmp_path / "code-server.log"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    process, url = start_code_server(tools, profile, log)
    try:
        line, column = cursor_of(case["prefix"][:-1])
        config = {
            "url": url, "folder": str(workspace), "fileName": FILE_NAME, "line": line, "column": column,
            "typed": case["prefix"][-1], "expected": case["middle"], "wheel": str(wheels[0]),
            "artifacts": str(ARTIFACTS), "readyTimeoutMs": 900_000, "ghostTimeoutMs": 60_000,
            "installTimeoutMs": 300_000, "toolsDir": tools.tools_dir, "chromium": tools.chromium,
        }
        config_file = ARTIFACTS / "config.json"
        config_file.write_text(json.dumps(config, indent=2))
        run = subprocess.run([tools.node, str(SCRIPT), str(config_file)], capture_output=True, text=True,
                             timeout=1800, env=tool_env(tools))
        (ARTIFACTS / "first-run.log").write_text(run.stderr)
        lines = run.stdout.strip().splitlines()
        assert lines, f"no result from first_run.mjs (exit {run.returncode}): {run.stderr[-3000:]}"
        result: dict[str, Any] = json.loads(lines[-1])
        (ARTIFACTS / "result.json").write_text(json.dumps(result, indent=2))
        events = result["events"]
        if "retry" in events and "ready" in events:
            seconds = (events["ready"] - events["retry"]) / 1000
            print(f"retry -> ready (pip install + server start + vLLM load): {seconds:.1f} s")
        assert result["ok"], result.get("error", "") + "\n" + "\n".join(result["log"])
    finally:
        stop(process)
        profile.keep_logs(log, ARTIFACTS)

    # The offer: one notification, the status bar in error meanwhile.
    assert result["offerCount"] == 1 and "no language server found" in result["offer"], result["offer"]
    assert "pip install vllm_ghost-<version>-py3-none-any.whl" in result["offer"]  # the manual way stays in the message
    assert result["offerState"] == "vLLM Ghost: error"
    # pip's failure on the broken wheel, with its own words.
    assert "installing the server failed (pip install exited with" in result["failure"], result["failure"]
    assert "vllm_ghost" in result["failure"] and "Retry" in result["failure"]
    # Progress showed pip's lines; the venv is in the extension's global storage, marked installed.
    assert any("Collecting" in text or "Processing" in text or "Installing" in text for text in result["progress"]), \
        result["progress"]
    venv = user_data / "User" / "globalStorage" / "vllm-ghost.vllm-ghost" / "server-venv"
    installed_marker = json.loads((venv / "vllm-ghost-installed.json").read_text())
    assert installed_marker["version"] == version and installed_marker["gpu"] is False
    assert (venv / "bin" / "python").exists()
    # The ghost text came from the installed server, which was started from the venv both times.
    assert result["ghost"] == case["middle"]
    output = (ARTIFACTS / "extension-output.log").read_text()
    starts = [line for line in output.splitlines() if "starting the language server (installed)" in line]
    assert len(starts) >= 2 and all(str(venv / "bin" / "python") in line for line in starts), starts

    # Nothing outlives code-server (the language server, its vLLM, pip).
    deadline = time.monotonic() + 60
    left = processes_with(profile.marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = processes_with(profile.marker)
    assert not left, f"left running after code-server stopped: {left}"
