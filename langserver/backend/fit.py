"""Fit the model to the card: read the GPUs, size the model, pick a preset, size vLLM's flags.

Plain data only (no LSP types). The server and `vllm-ghost doctor` call `fitted(settings)`, which

- reads the GPUs with `nvidia-smi --query-gpu=...` (the command can be replaced by a script that
  prints a recorded reading: $VLLM_GHOST_NVIDIA_SMI, for tests and for support);
- knows the model's size: a table for the presets, else the model's config.json and weight files
  (a local directory or the Hugging Face cache); "unknown" otherwise;
- works out weights + KV cache per token (layers x kv_heads x head_dim x 2 (K and V) x bytes;
  an FP8 KV cache halves it) and says before vLLM starts whether the model fits and what to change;
- with `model.path` empty, picks a preset by free memory (model.preset "auto") or by name;
- adds `--max-model-len` and `--gpu-memory-utilization` when vllm.args does not set them, and
  removes `--kv-cache-dtype fp8*` below compute capability 8.9 (vLLM's FP8 KV cache needs Ada).

`python -m langserver.backend.fit [--set KEY=VALUE ...]` prints the reading and the decision as JSON.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langserver.backend.launch import flag_value as flag_value  # the fit reads and the tests check the same flags
from langserver.backend.launch import token_count
from langserver.backend.shared import Registry, identity, runtime_dir
from langserver.settings import ModelSettings, Settings

NVIDIA_SMI_ENV = "VLLM_GHOST_NVIDIA_SMI"
QUERY = ("--query-gpu=name,memory.total,memory.free,compute_cap", "--format=csv,noheader,nounits")
PROBE_TIMEOUT_S = 15.0
MIB = 1024 * 1024
GIB = 1024 * MIB
# What vLLM holds beside weights and KV cache: the CUDA context, activations of a prefill
# chunk, CUDA graphs. vLLM's own profiling measures it; this is a safe upper figure for one GPU.
OVERHEAD_BYTES = int(1.5 * GIB)
# Left free for the desktop and the driver: vLLM refuses to start when free memory is below
# gpu_memory_utilization x total.
HEADROOM_BYTES = int(0.5 * GIB)
MAX_UTILIZATION = 0.92
# The context a completion needs: the file around the cursor (2,048 tokens), other files
# (2,048) and the answer, with room to spare; below it the model does not fit.
MIN_CONTEXT = 8192
# Longer is for Continue's chat on the same server; completions never use more.
TARGET_CONTEXT = 32768
FP8_KV_MIN_CC = (8, 9)


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    total_mib: int
    free_mib: int
    compute_cap: tuple[int, int]

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "totalMiB": self.total_mib, "freeMiB": self.free_mib,
                "computeCapability": f"{self.compute_cap[0]}.{self.compute_cap[1]}"}


@dataclass(frozen=True)
class Reading:
    """What nvidia-smi said: GPUs, or why there are none."""

    gpus: tuple[Gpu, ...] = ()
    error: str = ""
    command: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"command": list(self.command), "gpus": [gpu.to_json() for gpu in self.gpus], "error": self.error}


@dataclass(frozen=True)
class ModelShape:
    """What memory a model needs: its weights, and the KV cache per token of context."""

    weights_bytes: int
    layers: int
    kv_heads: int
    head_dim: int
    max_position: int
    dtype_bytes: int = 2  # of the KV cache when vLLM's kv-cache-dtype is "auto" (bf16/fp16)
    source: str = ""  # where the figures came from

    def kv_bytes_per_token(self, fp8: bool) -> int:
        return self.layers * self.kv_heads * self.head_dim * 2 * (1 if fp8 else self.dtype_bytes)

    def to_json(self) -> dict[str, Any]:
        return {"weightsBytes": self.weights_bytes, "layers": self.layers, "kvHeads": self.kv_heads,
                "headDim": self.head_dim, "maxPosition": self.max_position, "source": self.source}


@dataclass(frozen=True)
class Preset:
    key: str
    path: str
    prompt_format: str
    shape: ModelShape

    @property
    def served_name(self) -> str:
        """The name vLLM serves it under (status bar, Continue) when model.name is left at its default."""
        return ModelSettings().name if self.prompt_format == "chat-fim" else self.key


def _preset(key: str, path: str, prompt_format: str, gb: float, layers: int, kv_heads: int, max_pos: int) -> Preset:
    shape = ModelShape(int(gb * 1e9), layers, kv_heads, 128, max_pos, source="preset table")
    return Preset(key, path, prompt_format, shape)


# Largest first; sizes are the safetensors on the hub, layers and KV heads from each config.json.
PRESETS: tuple[Preset, ...] = (
    _preset("qwen3-coder-30b-fp8", "Qwen/Qwen3-Coder-30B-A3B-Instruct-FP8", "chat-fim", 31.2, 48, 4, 262144),
    _preset("qwen2.5-coder-14b", "Qwen/Qwen2.5-Coder-14B", "raw-fim", 29.5, 48, 8, 32768),
    _preset("qwen2.5-coder-7b", "Qwen/Qwen2.5-Coder-7B", "raw-fim", 15.2, 28, 4, 32768),
    _preset("qwen2.5-coder-3b", "Qwen/Qwen2.5-Coder-3B", "raw-fim", 6.2, 36, 2, 32768),
    _preset("qwen2.5-coder-1.5b", "Qwen/Qwen2.5-Coder-1.5B", "raw-fim", 3.1, 28, 2, 32768),
)
PRESET_KEYS = ("auto", *(preset.key for preset in PRESETS))


# --- the GPUs ---------------------------------------------------------------------------------
def probe_command(env: dict[str, str] | None = None) -> tuple[str, ...]:
    env = dict(os.environ) if env is None else env
    override = env.get(NVIDIA_SMI_ENV, "").strip()
    return (override or "nvidia-smi", *QUERY)


def read_gpus(command: tuple[str, ...] | None = None) -> Reading:
    command = command or probe_command()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
    except FileNotFoundError:
        return Reading(error=f"{command[0]} not found (no NVIDIA driver on PATH)", command=command)
    except (OSError, subprocess.TimeoutExpired) as err:
        return Reading(error=f"{command[0]} failed: {err}", command=command)
    if done.returncode != 0:
        why = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[0]  # the cause comes first
        return Reading(error=f"{command[0]} exited with {done.returncode}: {why}", command=command)
    try:
        return Reading(gpus=parse_nvidia_smi(done.stdout), command=command)
    except ValueError as err:
        return Reading(error=f"{command[0]} gave output this version cannot read: {err}", command=command)


_NUMBER = re.compile(r"^\d+(\.\d+)?$")


def parse_nvidia_smi(text: str) -> tuple[Gpu, ...]:
    """Lines of `name, total MiB, free MiB, compute capability`; ValueError on anything else."""
    gpus: list[Gpu] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        # A name may hold commas: the three numbers are the last fields.
        parts = [part.strip() for part in line.rsplit(",", 3)]
        if len(parts) != 4 or not all(_NUMBER.match(part) for part in parts[1:]) or not parts[0]:
            raise ValueError(f"unexpected line {line.strip()[:80]!r}")
        major, _, minor = parts[3].partition(".")
        gpus.append(Gpu(len(gpus), parts[0], int(float(parts[1])), int(float(parts[2])),
                        (int(major), int(minor or 0))))
    if not gpus:
        raise ValueError("no GPU listed")
    return tuple(gpus)


def chosen_gpu(reading: Reading, env: dict[str, str]) -> Gpu | None:
    """The GPU vLLM will use: the first of CUDA_VISIBLE_DEVICES when it names indices, else GPU 0."""
    if not reading.gpus:
        return None
    visible = env.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if visible.isdigit() and int(visible) < len(reading.gpus):
        return reading.gpus[int(visible)]
    return reading.gpus[0]


# --- the model --------------------------------------------------------------------------------
def preset_for_path(path: str) -> Preset | None:
    return next((preset for preset in PRESETS if preset.path == path), None)


def model_shape(path: str, env: dict[str, str] | None = None) -> ModelShape | None:
    """The shape of a preset, a local model directory or a hub id already in the HF cache; None if unknown."""
    preset = preset_for_path(path)
    if preset is not None:
        return preset.shape
    directory = _local_dir(path, dict(os.environ) if env is None else env)
    if directory is None:
        return None
    return shape_from_dir(directory)


def _local_dir(path: str, env: dict[str, str]) -> Path | None:
    local = Path(os.path.expanduser(path))
    if local.is_dir():
        return local
    if path.count("/") != 1:
        return None
    hub = env.get("HF_HUB_CACHE") or os.path.join(
        env.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub")
    snapshots = Path(hub) / f"models--{path.replace('/', '--')}" / "snapshots"
    found = sorted(snapshots.glob("*/config.json"), key=lambda p: p.stat().st_mtime) if snapshots.is_dir() else []
    return found[-1].parent if found else None


def shape_from_dir(directory: Path) -> ModelShape | None:
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    config = config.get("text_config", config) if isinstance(config.get("text_config"), dict) else config
    weights = sum(p.stat().st_size for p in directory.glob("*.safetensors")) or \
        sum(p.stat().st_size for p in directory.glob("*.bin"))
    try:
        heads = int(config["num_attention_heads"])
        head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
        shape = ModelShape(
            weights_bytes=weights, layers=int(config["num_hidden_layers"]),
            kv_heads=int(config.get("num_key_value_heads") or heads), head_dim=head_dim,
            max_position=int(config.get("max_position_embeddings") or TARGET_CONTEXT),
            dtype_bytes=4 if config.get("torch_dtype") == "float32" else 2, source=str(directory / "config.json"))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return shape if weights else None


# --- the decision -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """What the server will start, and what it told the user about it."""

    model_path: str
    prompt_format: str
    preset: str = ""  # the preset that chose the model; "" when model.path did
    gpu: Gpu | None = None
    shape: ModelShape | None = None
    fits: bool | None = None  # None: could not tell (no GPU reading, unknown size)
    message: str = ""  # one sentence for the user: the pick, the fit, or what to change
    added_args: tuple[str, ...] = ()
    removed_args: tuple[str, ...] = ()
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {"modelPath": self.model_path, "promptFormat": self.prompt_format, "preset": self.preset,
                "gpu": self.gpu.to_json() if self.gpu else None, "shape": self.shape.to_json() if self.shape else None,
                "fits": self.fits, "message": self.message, "addedArgs": list(self.added_args),
                "removedArgs": list(self.removed_args), "maxModelLen": self.max_model_len,
                "gpuMemoryUtilization": self.gpu_memory_utilization, "notes": list(self.notes)}


def without_flag(args: tuple[str, ...], flag: str) -> tuple[str, ...]:
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(flag + "="):
            kept.append(arg)
    return tuple(kept)


def gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB"


def budget(gpu: Gpu) -> tuple[float, int]:
    """gpu_memory_utilization and the bytes it gives vLLM: what is free, less a little headroom."""
    total = gpu.total_mib * MIB
    usable = max(0, gpu.free_mib * MIB - HEADROOM_BYTES)
    utilization = math.floor(min(MAX_UTILIZATION, usable / total) * 100) / 100 if total else 0.0
    return utilization, int(utilization * total)


def context_fits(shape: ModelShape, memory: int, fp8_kv: bool) -> int:
    """Tokens of KV cache left in `memory` after the weights and vLLM's overhead (may be negative)."""
    return (memory - shape.weights_bytes - OVERHEAD_BYTES) // shape.kv_bytes_per_token(fp8_kv)


def plan(settings: Settings, reading: Reading, env: dict[str, str] | None = None) -> Plan:
    env = {**os.environ, **settings.vllm.env} if env is None else env
    gpu = chosen_gpu(reading, env)
    args = settings.vllm.args
    notes: list[str] = []
    removed: tuple[str, ...] = ()
    kv_dtype = flag_value(args, "--kv-cache-dtype") or "auto"
    if gpu is not None and kv_dtype.startswith("fp8") and gpu.compute_cap < FP8_KV_MIN_CC:
        removed = ("--kv-cache-dtype", kv_dtype)
        kv_dtype = "auto"
        notes.append(f"--kv-cache-dtype fp8 removed: {gpu.name} has compute capability "
                     f"{gpu.compute_cap[0]}.{gpu.compute_cap[1]}, vLLM's FP8 KV cache needs 8.9 or later")
    fp8_kv = kv_dtype.startswith("fp8")

    model = settings.model
    if model.path:
        return _sized(Plan(model.path, model.prompt_format, "", gpu, model_shape(model.path, env),
                           removed_args=removed, notes=tuple(notes)), args, reading, fp8_kv)
    preset = _pick(model, gpu, fp8_kv, args, notes)
    return _sized(Plan(preset.path, preset.prompt_format, preset.key, gpu, preset.shape, removed_args=removed,
                       notes=tuple(notes)), args, reading, fp8_kv)


def _pick(model: ModelSettings, gpu: Gpu | None, fp8_kv: bool, args: tuple[str, ...], notes: list[str]) -> Preset:
    if model.preset != "auto":
        return next(preset for preset in PRESETS if preset.key == model.preset)
    if gpu is None:
        notes.append("no NVIDIA GPU read: the smallest preset is picked")
        return PRESETS[-1]
    memory = _memory_for(gpu, args)
    for preset in PRESETS:
        if context_fits(preset.shape, memory, fp8_kv) >= MIN_CONTEXT:
            return preset
    return PRESETS[-1]  # too small for any: _sized says so


def _memory_for(gpu: Gpu, args: tuple[str, ...]) -> int:
    utilization = flag_value(args, "--gpu-memory-utilization")
    try:
        if utilization is not None:
            return int(float(utilization) * gpu.total_mib * MIB)
    except ValueError:
        pass
    return budget(gpu)[1]


def _sized(result: Plan, args: tuple[str, ...], reading: Reading, fp8_kv: bool) -> Plan:
    """Check the fit on the GPU and add the flags the user did not set."""
    gpu, shape = result.gpu, result.shape
    picked = f"{result.model_path} (preset {result.preset}, {result.prompt_format}) " if result.preset else ""
    if gpu is None:
        why = reading.error or "no GPU listed"
        return dataclasses.replace(result, message=f"{picked}not sized for a GPU: {why}".strip())
    card = f"{gpu.name} ({gib(gpu.total_mib * MIB)}, {gib(gpu.free_mib * MIB)} free)"
    if shape is None:
        return dataclasses.replace(result, message=f"{result.model_path}: size unknown (no config.json and weights "
                                   f"on this machine yet), so not checked against {card}; vLLM's flags left as set")
    user_utilization = flag_value(args, "--gpu-memory-utilization")
    utilization, memory = budget(gpu)
    if user_utilization is not None:
        memory = _memory_for(gpu, args)
    tokens = context_fits(shape, memory, fp8_kv)
    user_len = flag_value(args, "--max-model-len")
    # vLLM reads `32k`/`32K` too; a value the fit cannot read (`auto`) is still the user's.
    wanted = token_count(user_len)
    need = wanted or MIN_CONTEXT
    if tokens < need:
        fix = _what_to_change(shape, gpu, memory, fp8_kv, wanted, result.preset)
        return dataclasses.replace(
            result, fits=False, message=f"{picked}does not fit {card}: weights {gib(shape.weights_bytes)} + "
            f"{need:,} tokens of KV cache ({gib(need * shape.kv_bytes_per_token(fp8_kv))}) + about "
            f"{gib(OVERHEAD_BYTES)} for vLLM need more than the {gib(max(memory, 0))} it may use. {fix}")
    added: list[str] = []
    length = wanted
    if user_len is None:
        length = min(shape.max_position, TARGET_CONTEXT, tokens // 1024 * 1024)
        added += ["--max-model-len", str(length)]
    if user_utilization is None:
        added += ["--gpu-memory-utilization", f"{utilization:.2f}"]
    return dataclasses.replace(
        result, fits=True, added_args=tuple(added), max_model_len=length,
        gpu_memory_utilization=utilization if user_utilization is None else None,
        message=f"{picked}fits {card}: weights {gib(shape.weights_bytes)}, KV cache room for {tokens:,} tokens"
        + (f"; --max-model-len {length} --gpu-memory-utilization {utilization:.2f} added" if added else ""))


def _what_to_change(shape: ModelShape, gpu: Gpu, memory: int, fp8_kv: bool, wanted: int | None, preset: str) -> str:
    smaller = [p for p in PRESETS if context_fits(p.shape, memory, fp8_kv) >= MIN_CONTEXT]
    fixes: list[str] = []
    if wanted is not None and context_fits(shape, memory, fp8_kv) >= MIN_CONTEXT:
        fixes.append(f"lower --max-model-len in vllm.args (at most {context_fits(shape, memory, fp8_kv):,})")
    if not fp8_kv and gpu.compute_cap >= FP8_KV_MIN_CC and context_fits(shape, memory, True) >= (wanted or MIN_CONTEXT):
        fixes.append("add --kv-cache-dtype fp8 to vllm.args")
    if gpu.free_mib < gpu.total_mib * 0.9:
        fixes.append(f"free GPU memory ({gib((gpu.total_mib - gpu.free_mib) * MIB)} is in use by other programs)")
    if smaller and smaller[0].key != preset:
        fixes.append(f"use a smaller model: model.preset {smaller[0].key} (or clear model.path)")
    if not fixes:
        fixes.append("no preset fits this card: use a larger GPU, or backend.mode external with a server elsewhere")
    return "Fix: " + "; or ".join(fixes) + "."


def apply(settings: Settings, result: Plan) -> Settings:
    """The settings vLLM starts with: the picked model and format, the flags added and removed."""
    args = settings.vllm.args
    if result.removed_args:
        args = without_flag(args, result.removed_args[0])
    args = (*args, *result.added_args)
    name = settings.model.name
    preset = next((p for p in PRESETS if p.key == result.preset), None)
    if preset is not None and name == ModelSettings().name:
        name = preset.served_name  # "qwen3-coder-flash" would misname a Qwen2.5-Coder model
    model = dataclasses.replace(settings.model, path=result.model_path, name=name,
                                prompt_format=result.prompt_format)  # type: ignore[arg-type]
    return dataclasses.replace(settings, model=model, vllm=dataclasses.replace(settings.vllm, args=args))


def fitted(settings: Settings, reading: Reading | None = None, remember: bool = False) -> tuple[Settings, Plan]:
    """Settings for a managed vLLM, fitted to this machine's GPU; external mode is left alone.

    A running shared vLLM fitted from the same settings is kept: once it holds the GPU, free
    memory would pick a smaller model and a second window would start a second vLLM beside it.
    `remember`: note this fit for the next window (the server does; doctor only looks)."""
    if settings.backend.mode != "managed":
        return settings, Plan(settings.model.path, settings.model.prompt_format, message="external backend: not sized")
    kept = _running_fit(settings)
    if kept is not None:
        return kept
    env = {**os.environ, **settings.vllm.env}
    reading = reading if reading is not None else read_gpus(probe_command(env))
    result = plan(settings, reading, env)
    final = apply(settings, result)
    if remember:
        _remember(settings, final, result)
    return final, result


def _pin_path(settings: Settings) -> Path:
    return runtime_dir() / f"fit-{identity(settings)}.json"


def _remember(requested: Settings, final: Settings, result: Plan) -> None:
    pin = {"identity": identity(final), "path": final.model.path, "name": final.model.name,
           "promptFormat": final.model.prompt_format,
           "args": list(final.vllm.args), "plan": result.to_json()}
    with contextlib.suppress(OSError):
        path = _pin_path(requested)
        path.write_text(json.dumps(pin), encoding="utf-8")


def _running_fit(requested: Settings) -> tuple[Settings, Plan] | None:
    try:
        pin = json.loads(_pin_path(requested).read_text(encoding="utf-8"))
        model = dataclasses.replace(requested.model, path=str(pin["path"]), name=str(pin["name"]),
                                    prompt_format=pin["promptFormat"])
        final = dataclasses.replace(requested, model=model,
                                    vllm=dataclasses.replace(requested.vllm, args=tuple(map(str, pin["args"]))))
        state = Registry(str(pin["identity"])).read()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if state is None or state.phase != "running" or not state.keeper.alive() or identity(final) != pin["identity"]:
        with contextlib.suppress(OSError):
            _pin_path(requested).unlink()  # its vLLM is gone: the next start reads the GPU afresh
        return None
    message = f"{final.model.path}: the running shared vLLM fitted earlier ({pin['plan'].get('message', '')})"
    return final, Plan(final.model.path, final.model.prompt_format, str(pin["plan"].get("preset", "")),
                       fits=pin["plan"].get("fits"), message=message,
                       max_model_len=pin["plan"].get("maxModelLen"))


def main(argv: list[str] | None = None) -> int:
    """Print the GPU reading and the fit decision as JSON (for a real reading on a GPU machine)."""
    import argparse

    from langserver.settings import settings_from_args

    parser = argparse.ArgumentParser(prog="python -m langserver.backend.fit", description=main.__doc__)
    parser.add_argument("--settings", help="settings as JSON text or a JSON file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    settings, problems = settings_from_args(args.settings, args.set)
    print(json.dumps(report(settings, problems), indent=1))
    return 0


def report(settings: Settings, problems: list[str] | None = None) -> dict[str, Any]:
    env = {**os.environ, **settings.vllm.env}
    reading = read_gpus(probe_command(env))
    final, result = fitted(settings, reading)
    return {"reading": reading.to_json(), "plan": result.to_json(), "vllmArgs": list(final.vllm.args),
            "problems": problems or []}


if __name__ == "__main__":
    raise SystemExit(main())
