"""Fitting the model to the card, from recorded nvidia-smi readings (tests/data/nvidia-smi).

Each reading is replayed through $VLLM_GHOST_NVIDIA_SMI, a script that prints the recorded output,
so the probe runs as it does on a GPU machine: a subprocess, its exit status, its parsing.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from langserver.backend import fit
from langserver.backend.fit import MIB
from langserver.settings import parse_settings

ROOT = Path(__file__).resolve().parents[2]
READINGS = ROOT / "tests" / "data" / "nvidia-smi"


def replay(tmp_path: Path, name: str, exit_code: int = 0) -> str:
    """A stand-in nvidia-smi that prints a recorded reading (and exits as the real one did)."""
    script = tmp_path / f"nvidia-smi-{name}"
    script.write_text(f"#!/bin/sh\ncat '{READINGS / name}'\nexit {exit_code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def decide(tmp_path: Path, reading: str, exit_code: int = 0, **options: object) -> tuple[fit.Plan, tuple[str, ...]]:
    raw: dict[str, object] = {"vllm": {"env": {fit.NVIDIA_SMI_ENV: replay(tmp_path, reading, exit_code),
                                               "HF_HUB_CACHE": str(tmp_path / "hub")}}}
    for key, value in options.items():
        section, name = key.split("__")
        raw.setdefault(section, {})[name] = value  # type: ignore[index]
    settings, problems = parse_settings(raw)
    assert not problems, problems
    final, result = fit.fitted(settings)
    return result, final.vllm.args


@pytest.mark.parametrize(("reading", "preset", "prompt_format"), [
    ("rtx4060-8gb.csv", "qwen2.5-coder-1.5b", "raw-fim"),
    ("rtx4080-16gb.csv", "qwen2.5-coder-3b", "raw-fim"),
    ("rtx3090-24gb.csv", "qwen2.5-coder-7b", "raw-fim"),
    ("rtxa6000-48gb.csv", "qwen3-coder-30b-fp8", "chat-fim"),
    ("l40s-48gb.csv", "qwen3-coder-30b-fp8", "chat-fim"),
    ("h100-80gb.csv", "qwen3-coder-30b-fp8", "chat-fim"),
    ("rtx3090-24gb-busy.csv", "qwen2.5-coder-1.5b", "raw-fim"),  # 18 GB taken by another program
])
def test_auto_preset_picks_the_largest_model_that_fits_free_memory(tmp_path: Path, reading: str, preset: str,
                                                                   prompt_format: str) -> None:
    result, args = decide(tmp_path, reading)
    assert (result.preset, result.prompt_format, result.fits) == (preset, prompt_format, True), result.message
    gpu = result.gpu
    assert gpu is not None and result.max_model_len is not None and result.gpu_memory_utilization is not None
    # What vLLM is told: a context a completion can use, and no more memory than is free now
    # (vLLM refuses to start when free memory is below utilization x total).
    assert fit.flag_value(args, "--max-model-len") == str(result.max_model_len)
    assert fit.MIN_CONTEXT <= result.max_model_len <= fit.TARGET_CONTEXT
    assert result.gpu_memory_utilization * gpu.total_mib <= gpu.free_mib
    assert "fits" in result.message and gpu.name in result.message
    # The KV cache the flags leave holds the context: weights + overhead + max_model_len tokens fit.
    assert result.shape is not None
    kv = result.max_model_len * result.shape.kv_bytes_per_token(False)
    need = result.shape.weights_bytes + fit.OVERHEAD_BYTES + kv
    assert need <= result.gpu_memory_utilization * gpu.total_mib * MIB


def test_h100_reading_is_parsed_as_the_card_reports_it(tmp_path: Path) -> None:
    reading = fit.read_gpus((replay(tmp_path, "h100-80gb.csv"),))
    assert reading.error == "" and reading.gpus == (fit.Gpu(0, "NVIDIA H100 80GB HBM3", 81559, 81079, (9, 0)),)


def test_a_card_too_small_for_any_preset_says_so_and_what_to_do(tmp_path: Path) -> None:
    result, args = decide(tmp_path, "gt1030-2gb.csv")
    assert result.fits is False and "does not fit" in result.message
    assert "no preset fits this card" in result.message and "backend.mode external" in result.message
    assert fit.flag_value(args, "--max-model-len") is None  # nothing sized for a model that cannot start


def test_an_explicit_model_path_wins_and_a_too_large_one_names_the_preset_that_fits(tmp_path: Path) -> None:
    result, _ = decide(tmp_path, "rtx4080-16gb.csv", model__path="Qwen/Qwen2.5-Coder-14B")
    assert result.model_path == "Qwen/Qwen2.5-Coder-14B" and result.preset == ""
    assert result.fits is False and "model.preset qwen2.5-coder-3b" in result.message


def test_a_named_preset_is_used_even_where_auto_would_pick_another(tmp_path: Path) -> None:
    result, _ = decide(tmp_path, "h100-80gb.csv", model__preset="qwen2.5-coder-7b")
    assert (result.model_path, result.fits) == ("Qwen/Qwen2.5-Coder-7B", True)


def test_fp8_kv_cache_is_removed_below_compute_capability_8_9_and_kept_above(tmp_path: Path) -> None:
    args = ["--kv-cache-dtype", "fp8", "--enable-auto-tool-choice"]
    ampere, ampere_args = decide(tmp_path, "rtx3090-24gb.csv", vllm__args=args)
    assert fit.flag_value(ampere_args, "--kv-cache-dtype") is None and "--enable-auto-tool-choice" in ampere_args
    assert any("compute capability 8.6" in note for note in ampere.notes)
    _, ada_args = decide(tmp_path, "l40s-48gb.csv", vllm__args=args)
    assert fit.flag_value(ada_args, "--kv-cache-dtype") == "fp8"


def test_flags_the_user_set_are_left_alone(tmp_path: Path) -> None:
    result, args = decide(tmp_path, "h100-80gb.csv", vllm__args=["--max-model-len", "16384"])
    assert fit.flag_value(args, "--max-model-len") == "16384" and args.count("--max-model-len") == 1
    assert fit.flag_value(args, "--gpu-memory-utilization") is not None  # the one not set is still sized
    result, args = decide(tmp_path, "h100-80gb.csv", vllm__args=["--gpu-memory-utilization=0.5"])
    assert [a for a in args if a.startswith("--gpu-memory-utilization")] == ["--gpu-memory-utilization=0.5"]
    assert result.fits is True  # 0.5 x 80 GB still holds the 30B model


@pytest.mark.parametrize(("value", "tokens"), [("32k", 32_000), ("32K", 32_768), ("auto", None)])
def test_a_context_length_written_as_vllm_reads_it_is_the_users(tmp_path: Path, value: str, tokens: int | None) -> None:
    result, args = decide(tmp_path, "h100-80gb.csv", vllm__args=["--max-model-len", value])
    assert args.count("--max-model-len") == 1 and fit.flag_value(args, "--max-model-len") == value
    assert result.max_model_len == tokens and result.fits is True


def test_cuda_visible_devices_picks_the_card_that_is_sized(tmp_path: Path) -> None:
    first, _ = decide(tmp_path, "two-gpus.csv")
    second, _ = decide(tmp_path, "two-gpus.csv", vllm__env={
        fit.NVIDIA_SMI_ENV: replay(tmp_path, "two-gpus.csv"), "CUDA_VISIBLE_DEVICES": "1",
        "HF_HUB_CACHE": str(tmp_path / "hub")})
    assert first.gpu is not None and "4060" in first.gpu.name and first.preset == "qwen2.5-coder-1.5b"
    assert second.gpu is not None and "4090" in second.gpu.name and second.preset == "qwen2.5-coder-7b"


@pytest.mark.parametrize(("reading", "exit_code", "words"), [
    ("nvml-mismatch.txt", 18, "Driver/library version mismatch"),
    ("broken.csv", 0, "cannot read"),
])
def test_broken_nvidia_smi_falls_back_with_the_reason(tmp_path: Path, reading: str, exit_code: int, words: str) -> None:
    result, args = decide(tmp_path, reading, exit_code)
    assert result.fits is None and words in result.message
    assert result.preset == "qwen2.5-coder-1.5b"  # the smallest: nothing known about the card
    assert fit.flag_value(args, "--max-model-len") is None


def test_missing_nvidia_smi_is_not_an_error(tmp_path: Path) -> None:
    settings, _ = parse_settings({"model": {"path": "/models/x"},
                                  "vllm": {"env": {fit.NVIDIA_SMI_ENV: str(tmp_path / "no-nvidia-smi")}}})
    final, result = fit.fitted(settings)
    assert result.fits is None and "not found" in result.message
    assert final.model.path == "/models/x" and final.vllm.args == settings.vllm.args


def test_an_unknown_model_size_is_said_and_nothing_is_sized(tmp_path: Path) -> None:
    result, args = decide(tmp_path, "rtx3090-24gb.csv", model__path="someone/not-downloaded-model")
    assert result.shape is None and result.fits is None and "size unknown" in result.message
    assert fit.flag_value(args, "--max-model-len") is None


def test_a_local_model_is_sized_from_its_config_and_weights(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "hidden_size": 3584,
        "max_position_embeddings": 32768, "torch_dtype": "bfloat16"}))
    with open(model / "model.safetensors", "wb") as weights:
        weights.truncate(15_200_000_000)  # sparse: the size is what counts
    shape = fit.model_shape(str(model), {})
    assert shape is not None and shape.kv_bytes_per_token(False) == 28 * 4 * 128 * 2 * 2
    assert shape.kv_bytes_per_token(True) * 2 == shape.kv_bytes_per_token(False)
    result, _ = decide(tmp_path, "rtx4080-16gb.csv", model__path=str(model))
    assert result.fits is False and "15.2 GB" not in result.message and "14.2 GiB" in result.message
    result, _ = decide(tmp_path, "rtx3090-24gb.csv", model__path=str(model))
    assert result.fits is True


def test_python_m_prints_the_reading_and_the_decision_as_json(tmp_path: Path) -> None:
    env = {**os.environ, fit.NVIDIA_SMI_ENV: replay(tmp_path, "h100-80gb.csv"), "HF_HUB_CACHE": str(tmp_path)}
    for argv in ([sys.executable, "-m", "langserver.backend.fit"],
                 [sys.executable, "-m", "langserver", "doctor", "--gpu-json"]):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["reading"]["gpus"][0]["totalMiB"] == 81559
        assert report["plan"]["preset"] == "qwen3-coder-30b-fp8" and report["plan"]["fits"] is True
        assert "--max-model-len" in report["vllmArgs"]


def test_preset_names_agree_with_the_settings_schema() -> None:
    from typing import get_args

    from langserver.settings import ModelPreset

    assert get_args(ModelPreset) == fit.PRESET_KEYS


def test_a_running_shared_vllm_keeps_its_fit_when_another_window_reads_less_free_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the first window's vLLM holds the card, free memory would pick a smaller model and the second
    window would start a second vLLM: it joins the running one with the same fitted settings instead."""
    from langserver.backend.shared import Member, Registry, SharedState, identity

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    requested, _ = parse_settings({})
    idle = fit.read_gpus((replay(tmp_path, "rtx3090-24gb.csv"),))
    busy = fit.read_gpus((replay(tmp_path, "rtx3090-24gb-busy.csv"),))
    first, plan = fit.fitted(requested, idle, remember=True)
    assert plan.preset == "qwen2.5-coder-7b"
    registry = Registry(identity(first))
    registry.write(SharedState(launch_id="l1", keeper=Member.me(), host="127.0.0.1", port=1, api_key="k",
                               log="x.log", model="qwen3-coder-flash", started_at=0.0))
    second, joined = fit.fitted(requested, busy, remember=True)
    assert second == first and identity(second) == identity(first) and "running shared vLLM" in joined.message
    registry.state_path.unlink()  # that vLLM stopped: the next start reads the card afresh
    _, fresh = fit.fitted(requested, busy)
    assert fresh.preset == "qwen2.5-coder-1.5b"
