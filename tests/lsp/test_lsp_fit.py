"""A managed start as a user with no model.path gets it, through a real LSP session (no model needed).

The GPU is a recorded nvidia-smi reading ($VLLM_GHOST_NVIDIA_SMI); vllm.command is a stand-in that
records the command line and environment it was started with, writes into the hub cache as a download
would, and exits. What is checked is what the user and vLLM see: the fit message before the start, the
picked model and sized flags on vLLM's command line, usage statistics off in its environment, the
download's size ("size unknown" offline) and its progress as LSP work-done progress.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from bench.lsp import GhostClient
from langserver.backend import fit, hub
from langserver.backend.launch import build_launch
from langserver.settings import parse_settings
from tests.scripted_hub import PETABYTE, ScriptedHub

READINGS = Path(__file__).resolve().parents[1] / "data" / "nvidia-smi"

# Records argv and the environment, then "downloads" 3 MB in steps and fails, as vLLM would offline.
FAKE_VLLM = """
import json, os, sys, time
from pathlib import Path
Path(sys.argv[1]).write_text(json.dumps({"argv": sys.argv[2:], "env": dict(os.environ)}))
blobs = Path(os.environ["HF_HUB_CACHE"]) / "models--Qwen--Qwen2.5-Coder-7B" / "blobs"
blobs.mkdir(parents=True, exist_ok=True)
with open(blobs / "0123abcd.incomplete", "wb") as part:
    for _ in range(6):
        part.write(b"x" * 500_000)
        part.flush()
        time.sleep(0.5)
print("OSError: We couldn't connect to 'https://huggingface.co' to load this file", file=sys.stderr)
sys.exit(1)
"""


def replay(tmp_path: Path, name: str) -> str:
    script = tmp_path / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat '{READINGS / name}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


@pytest.mark.slow  # a language server and a stand-in vLLM: about 25 s on 2 shared cores
async def test_auto_preset_on_a_24gb_card_starts_a_sized_private_vllm_and_shows_the_download(tmp_path: Path) -> None:
    record = tmp_path / "launch.json"
    fake = tmp_path / "fake_vllm.py"
    fake.write_text(FAKE_VLLM)
    hub_cache = tmp_path / "hub"
    client = GhostClient()
    # The reading and the hub cache come from the server's own environment, as on a user's machine.
    await client.launch(env={fit.NVIDIA_SMI_ENV: replay(tmp_path, "rtx3090-24gb.csv"),
                             "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1",
                             "XDG_RUNTIME_DIR": str(tmp_path / "run")})
    await client.open_session({"vllm": {"command": [sys.executable, str(fake), str(record)], "maxRestarts": 0}})
    status = await client.wait_status("error", timeout=60)
    await client.close_session()

    # Before the start: which model, and that it fits.
    assert any("fit:" in line and "Qwen/Qwen2.5-Coder-7B" in line and "NVIDIA GeForce RTX 3090" in line
               and "fits" in line for line in client.logs), client.logs
    launched = json.loads(record.read_text())
    argv, env = launched["argv"], launched["env"]
    assert argv[argv.index("--model") + 1] == "Qwen/Qwen2.5-Coder-7B"
    assert argv[argv.index("--served-model-name") + 1] == "qwen2.5-coder-7b"  # not the 30B's qwen3-coder-flash
    assert int(argv[argv.index("--max-model-len") + 1]) >= fit.MIN_CONTEXT
    assert 0 < float(argv[argv.index("--gpu-memory-utilization") + 1]) <= fit.MAX_UTILIZATION
    # Private by default.
    assert env["VLLM_NO_USAGE_STATS"] == "1" and env["DO_NOT_TRACK"] == "1"
    # The download: its size before (unknown offline), its progress during.
    assert any("not downloaded yet" in line and "size unknown" in line for line in client.logs), client.logs
    downloading = [s["message"] for s in client.statuses if s["message"].startswith("Downloading Qwen/")]
    assert any("MB of an unknown size" in message for message in downloading), downloading
    reports = [p.get("message", "") for p in client.progress if p.get("kind") in ("begin", "report")]
    assert any("MB of an unknown size" in message for message in reports), reports
    assert "vllmGhost.model.path" in status["message"] or status["state"] == "error"


@pytest.mark.slow  # a language server: about 10 s on 2 shared cores
async def test_a_download_the_disk_cannot_hold_stops_before_vllm_starts_and_says_so(tmp_path: Path) -> None:
    record = tmp_path / "launch.json"
    fake = tmp_path / "fake_vllm.py"
    fake.write_text(FAKE_VLLM)
    scripted_hub = ScriptedHub(PETABYTE)
    client = GhostClient()
    try:
        await client.launch(env={fit.NVIDIA_SMI_ENV: replay(tmp_path, "rtx3090-24gb.csv"),
                                 "HF_HUB_CACHE": str(tmp_path / "hub" / "not-yet"), "HF_ENDPOINT": scripted_hub.url,
                                 "XDG_RUNTIME_DIR": str(tmp_path / "run")})
        await client.open_session({"vllm": {"command": [sys.executable, str(fake), str(record)]}})
        status = await client.wait_status("error", timeout=60)
        await client.close_session()
    finally:
        scripted_hub.close()
    # The size before the start, then the shortfall with the fix; vLLM never started, nor retried.
    assert any("not downloaded yet" in line and "1000000.0 GB" in line for line in client.logs), client.logs
    assert "Qwen/Qwen2.5-Coder-7B needs 1000000.0 GB more in" in status["message"], status
    assert "HF_HUB_CACHE" in status["message"] and "Restart Model" in status["message"]
    assert not record.exists()
    assert not [s for s in client.statuses if s["message"].startswith("Downloading")], client.statuses


def test_usage_statistics_are_off_unless_vllm_env_says_otherwise() -> None:
    settings, _ = parse_settings({"model": {"path": "/models/x"}})
    env = build_launch(settings).env
    assert (env["VLLM_NO_USAGE_STATS"], env["DO_NOT_TRACK"]) == ("1", "1")
    settings, _ = parse_settings({"model": {"path": "/models/x"}, "vllm": {"env": {"DO_NOT_TRACK": "0"}}})
    assert build_launch(settings).env["DO_NOT_TRACK"] == "0"


def test_download_size_falls_back_to_unknown_without_the_hub(tmp_path: Path) -> None:
    fake_id = "vllm-ghost-tests/no-such-model"
    assert hub.download_size(fake_id, {"HF_HUB_OFFLINE": "1"}) is None
    # Hub unreachable (a closed port): unknown, quickly, no exception.
    assert hub.download_size(fake_id, {"HF_ENDPOINT": "http://127.0.0.1:9"}, timeout_s=5) is None
    assert hub.size_text(None) == "size unknown"
    assert hub.is_hub_id(fake_id) and not hub.is_cached(fake_id, {"HF_HUB_CACHE": str(tmp_path)})


def test_the_download_counts_what_vllm_fetches_and_partial_files() -> None:
    files = {"model-00001-of-00002.safetensors": 4_000_000_000, "model-00002-of-00002.safetensors": 1_000_000_000,
             "pytorch_model.bin": 5_000_000_000, "config.json": 1_000, "tokenizer.json": 7_000_000,
             "original/consolidated.pth": 9_000_000_000}
    assert hub.fetched_size(files) == 5_007_001_000
    assert hub.size_text(5_007_001_000) == "5.0 GB"

