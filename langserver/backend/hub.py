"""A model from the Hugging Face hub: is it downloaded, how big is the download, how far has it got.

vLLM downloads a hub id itself on its first start, tens of GB for the large presets, and says
little while it does. The server says the size before (huggingface_hub's model_info with file
metadata, when the hub answers; "size unknown" offline) and the bytes in the cache during it.
The size question goes to the hub only for a model that is about to be downloaded from it anyway.
When the size is known and the cache's disk cannot hold the rest of it, the start stops there
(`lacks_room`): vLLM would otherwise fail minutes into the download with a bare OSError.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

ASK_TIMEOUT_S = 10.0
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# What vLLM fetches of a repository: the weights (safetensors when there are any) and the small files.
_SMALL = (".json", ".txt", ".model", ".tiktoken", ".jinja")


def hub_cache(env: Mapping[str, str]) -> Path:
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"])
    home = env.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hub"


def is_hub_id(path: str) -> bool:
    """`owner/name` that is not a directory here: vLLM takes it from the hub (or its cache)."""
    return bool(_HUB_ID.match(path)) and not Path(os.path.expanduser(path)).exists()


def repo_dir(repo_id: str, env: Mapping[str, str]) -> Path:
    return hub_cache(env) / f"models--{repo_id.replace('/', '--')}"


def is_cached(repo_id: str, env: Mapping[str, str]) -> bool:
    return any((repo_dir(repo_id, env) / "snapshots").glob("*/config.json"))


def offline(env: Mapping[str, str]) -> bool:
    return any(env.get(name, "").lower() in ("1", "true", "yes", "on") for name in ("HF_HUB_OFFLINE",
                                                                                     "TRANSFORMERS_OFFLINE"))


def download_size(repo_id: str, env: Mapping[str, str], timeout_s: float = ASK_TIMEOUT_S) -> int | None:
    """Bytes vLLM will download for `repo_id`; None when the hub cannot say (offline, unknown id,
    no huggingface_hub, a time-out)."""
    if offline(env):
        return None
    try:
        from huggingface_hub import HfApi
    except ImportError:
        return None
    try:
        api = HfApi(endpoint=env.get("HF_ENDPOINT") or None, token=env.get("HF_TOKEN") or None)
        info = api.model_info(repo_id, files_metadata=True, timeout=timeout_s)
    except Exception:  # every failure means the same here: the size is unknown
        return None
    files = {sibling.rfilename: sibling.size or 0 for sibling in info.siblings or []}
    return fetched_size(files) or None


def fetched_size(files: Mapping[str, int]) -> int:
    """The part of a repository vLLM downloads: safetensors weights (else .bin), and the small files."""
    safetensors = [size for name, size in files.items() if name.endswith(".safetensors")]
    weights = safetensors or [size for name, size in files.items() if name.endswith(".bin")]
    small = [size for name, size in files.items() if name.endswith(_SMALL) and "/" not in name]
    return sum(weights) + sum(small)


def downloaded_bytes(repo_id: str, env: Mapping[str, str]) -> int:
    """Bytes in the cache for `repo_id`, partial files included (huggingface_hub writes
    blobs/<hash>.incomplete while it downloads)."""
    blobs = repo_dir(repo_id, env) / "blobs"
    total = 0
    try:
        entries = list(os.scandir(blobs))
    except OSError:
        return 0
    for entry in entries:
        try:
            total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return total


def free_bytes(path: Path) -> int | None:
    """Free bytes on the file system that holds `path`, or would hold it (its nearest existing
    parent: the hub cache may not exist yet); None when that cannot be read."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def lacks_room(repo_id: str, size: int | None, fetched: int, env: Mapping[str, str]) -> str | None:
    """A sentence naming the shortfall and the fix when the hub cache's disk cannot hold the rest
    of `repo_id`'s download (`size` bytes, `fetched` of them in the cache already: downloaded_bytes);
    None when it can, or when the size or the free space is unknown (then vLLM is left to try)."""
    if size is None:
        return None
    where = hub_cache(env)
    free = free_bytes(where)
    remaining = size - fetched
    if free is None or free >= remaining:
        return None
    return (f"{repo_id} needs {size_text(remaining)} more in {where}, whose disk has {size_text(free)} free: "
            "free space there or set HF_HUB_CACHE in vllmGhost.vllm.env to a disk with room, then run "
            "'vLLM Ghost: Restart Model'.")


def size_text(size: int | None) -> str:
    if size is None:
        return "size unknown"
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.0f} MB"
