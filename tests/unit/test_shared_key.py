"""A fixed port is for sharing with Continue: its key survives restarts, kept 0600."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from langserver.backend.launch import build_launch, key_file
from langserver.settings import parse_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    return tmp_path


def test_fixed_port_keeps_one_key_in_a_private_file() -> None:
    settings, _ = parse_settings({"vllm": {"port": 30000}})
    first, second = build_launch(settings), build_launch(settings)
    assert first.api_key == second.api_key
    assert key_file().read_text().strip() == first.api_key
    assert stat.S_IMODE(key_file().stat().st_mode) == 0o600
    assert first.api_key not in " ".join(first.argv)
    assert first.env["VLLM_API_KEY"] == first.api_key


def test_free_port_keeps_one_key_per_server_process_and_writes_no_file() -> None:
    """A restart with a new key compiled a 30B model again on vLLM 0.26 (the key is in its compile-cache
    key); another server process still gets a key of its own."""
    settings, _ = parse_settings({"vllm": {"port": 0}})
    first = build_launch(settings)
    assert build_launch(settings).api_key == first.api_key
    assert first.api_key not in " ".join(first.argv)
    other = subprocess.run(
        [sys.executable, "-c", "from langserver.backend.launch import build_launch\n"
         "from langserver.settings import parse_settings\n"
         "print(build_launch(parse_settings({'vllm': {'port': 0}})[0]).api_key)"],
        capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
    assert other and other != first.api_key
    assert not key_file().exists()
