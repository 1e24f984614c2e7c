"""This user's `cache_salt` for a shared vLLM (backend/fields.py says why).

Stable (the same every session, so the user's own prefix cache keeps working across restarts and
windows) and private to the user: an HMAC, per server URL, of a random secret created once in the
user's state directory, readable by its owner only. Never the API key: a team often shares one
key, and the salt must differ per user. The secret itself never leaves the machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path


def secret_file() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "vllm-ghost" / "cache-salt-secret"


def _read(path: Path) -> bytes | None:
    with contextlib.suppress(FileNotFoundError, UnicodeDecodeError):
        secret = path.read_text(encoding="ascii").strip()
        if len(secret) >= 32:
            return secret.encode("ascii")
    return None


def _secret() -> bytes:
    path = secret_file()
    found = _read(path)
    if found is not None:
        os.chmod(path, 0o600)
        return found
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    try:
        if path.exists():  # damaged (empty, cut short): replaced
            os.replace(temporary, path)
        else:
            with contextlib.suppress(FileExistsError):  # two servers starting at once: the first one's stays
                os.link(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return _read(path) or b""


def cache_salt(base_url: str) -> str:
    """64 hex digits (vLLM takes up to 128 characters, no '/' or '@')."""
    return hmac.new(_secret(), b"vllm-ghost cache_salt " + base_url.encode(), hashlib.sha256).hexdigest()
