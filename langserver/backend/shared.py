"""One managed vLLM per machine and backend settings, shared by every language server
(every VS Code window) that asks for the same thing.

A 30B model holds most of a GPU: a second window must attach to the first one's
vLLM, not start its own. The registry lives in the user's runtime directory
($XDG_RUNTIME_DIR/vllm-ghost, else ~/.cache/vllm-ghost/run; mode 0700), one
set of files per backend identity (a hash of the settings that shape the vLLM
process, see `identity`):

    <id>.lock             flock: whoever holds it may read, change or create the state
    <id>.json             the state (0600: it holds the API key), see SharedState
    <id>-<launch>.log     vLLM's output, written by the keeper (0600); every client tails it

The keeper process (keeper.py) owns the vLLM and lives as long as any client
does: clients add themselves to the state, and the keeper drops the dead ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from langserver.settings import Settings

Phase = Literal["running", "stopping"]
STATE_VERSION = 1


@dataclass(frozen=True)
class Member:
    """One process, by pid and start time: a pid alone may name another process after reuse."""

    pid: int
    start: int = 0  # clock ticks after boot (Linux); 0 = unknown, the pid alone decides

    @classmethod
    def me(cls) -> Member:
        return cls.of(os.getpid())

    @classmethod
    def of(cls, pid: int) -> Member:
        return cls(pid, process_start(pid) or 0)

    def alive(self) -> bool:
        start = process_start(self.pid)
        return start is not None and (self.start == 0 or start == 0 or start == self.start)


def process_start(pid: int) -> int | None:
    """The start time of a live process (0 where /proc cannot tell); None if there is none.
    A zombie counts as gone: it holds nothing, its parent just has not reaped it."""
    if not proc_is_ours():
        return _exists(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return _exists(pid)
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def proc_is_ours() -> bool:
    """Whether /proc describes this process's pid namespace. A plain chroot has no /proc (or an
    empty directory), and a new pid namespace may see the host's: there every /proc/PID lookup
    says "no such process", so the server took its freshly started keeper for dead, cleared its
    registration, and the keeper found no state and exited (issue 27). Without it, liveness falls
    back to kill(pid, 0) and start times are unknown (0)."""
    return _proc_self_pid(os.getpid())


@functools.cache
def _proc_self_pid(pid: int) -> bool:  # keyed on our pid: a forked child asks again
    try:
        return Path("/proc/self/stat").read_text().split(" ", 1)[0] == str(pid)
    except (OSError, IndexError):
        return False


def _exists(pid: int) -> int | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return 0
    return 0


@dataclass(frozen=True)
class SharedState:
    launch_id: str
    keeper: Member
    host: str
    port: int
    api_key: str
    log: str  # file name in the registry directory
    model: str  # for people (`vllm-ghost servers`)
    started_at: float  # wall clock
    clients: tuple[Member, ...] = ()
    vllm_pid: int | None = None  # vLLM's API server; also its process group
    phase: Phase = "running"
    reason: str = ""  # why it is stopping
    keep_alive: bool = False  # any client asked: never stop when idle
    grace_s: float = 10.0  # the longest any client asked for

    def with_client(self, member: Member, keep_alive: bool, grace_s: float) -> SharedState:
        clients = (*(c for c in self.clients if c.pid != member.pid), member)
        return replace(self, clients=clients, keep_alive=self.keep_alive or keep_alive,
                       grace_s=max(self.grace_s, grace_s))

    def without_client(self, pid: int) -> SharedState:
        return replace(self, clients=tuple(c for c in self.clients if c.pid != pid))

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        data["version"] = STATE_VERSION
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str) -> SharedState | None:
        try:
            data = json.loads(text)
            if data.pop("version", None) != STATE_VERSION:
                return None
            data["keeper"] = Member(**data["keeper"])
            data["clients"] = tuple(Member(**c) for c in data.get("clients", ()))
            return cls(**data)
        except (ValueError, TypeError, KeyError):
            return None


def runtime_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR")
    root = Path(base) / "vllm-ghost" if base else Path.home() / ".cache" / "vllm-ghost" / "run"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(root, 0o700)
    return root


def identity(settings: Settings) -> str:
    """What makes two launches the same vLLM; completion settings and the prompt format do not."""
    vllm = settings.vllm
    shape = {"model": settings.model.path, "name": settings.model.name, "command": list(vllm.command),
             "args": list(vllm.args), "env": vllm.env, "host": vllm.host, "port": vllm.port}
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


# Files other modules keep in the runtime directory for one shared vLLM (fit.py writes them).
COMPANION_GLOB = "fit-*.json"


@dataclass
class Registry:
    """The files of one backend identity."""

    id: str
    root: Path = field(default_factory=runtime_dir)

    @classmethod
    def for_settings(cls, settings: Settings) -> Registry:
        return cls(identity(settings))

    @property
    def state_path(self) -> Path:
        return self.root / f"{self.id}.json"

    def log_path(self, name: str) -> Path:
        return self.root / name

    def log_name(self, launch_id: str) -> str:
        return f"{self.id}-{launch_id}.log"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Held for file operations only (milliseconds), never across a wait."""
        descriptor = os.open(self.root / f"{self.id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # closing releases the lock

    def read(self) -> SharedState | None:
        try:
            return SharedState.from_json(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def write(self, state: SharedState) -> None:
        """Atomically (readers without the lock see the old or the new state), mode 0600."""
        descriptor, temporary = tempfile.mkstemp(dir=self.root, prefix=f".{self.id}.", suffix=".json")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(state.to_json())
            os.replace(temporary, self.state_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def read_launch(self, launch_id: str) -> SharedState | None:
        """The state, if it is still that launch's (not replaced by a newer one, not removed)."""
        state = self.read()
        return state if state is not None and state.launch_id == launch_id else None

    def remove(self, launch_id: str) -> None:
        """Remove the state if it is still that launch's, and the files kept beside it for it."""
        if self.read_launch(launch_id) is not None:
            with contextlib.suppress(FileNotFoundError):
                self.state_path.unlink()
            self._remove_companions()

    def _remove_companions(self) -> None:
        """fit.py's pins (which model and flags this shared vLLM was fitted with) name it as their
        "identity": once it is gone they would only be read and dropped later, so drop them now."""
        for path in self.root.glob(COMPANION_GLOB):
            with contextlib.suppress(OSError, ValueError):
                if json.loads(path.read_text(encoding="utf-8")).get("identity") == self.id:
                    path.unlink()


def all_states(root: Path | None = None) -> list[tuple[Registry, SharedState]]:
    """Every shared vLLM this user has registered (for `vllm-ghost servers`)."""
    root = root or runtime_dir()
    found = []
    for path in sorted(root.glob("*.json")):
        if path.name.startswith("."):
            continue
        registry = Registry(path.stem, root)
        state = registry.read()
        if state is not None:
            found.append((registry, state))
    return found
