"""The managed vLLM process: start (or join), health, logs, stop.

vLLM runs under our guardian (guardian.py) in its own process group, bound to
127.0.0.1 with a random key passed by environment, never argv; a keeper
(keeper.py) owns it so that every language server with the same settings shares
one vLLM (shared.py). One ManagedVllm is one server's use of one launch; the
supervisor (supervisor.py) makes a new one for every restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx

from langserver.backend import hub, startup
from langserver.backend.client import Endpoint
from langserver.backend.diagnosis import Failure, classify
from langserver.backend.guardian import group_alive
from langserver.backend.keeper import STOPPED
from langserver.backend.launch import (
    Launch,
    build_launch,
    is_loopback,
    missing_compiler,
    port_in_use,
    resolve_command,
    strip_secret_flags,
)
from langserver.backend.shared import Member, Registry, SharedState, proc_is_ours
from langserver.backend.status import Status
from langserver.settings import Settings

TAIL_LINES = 100  # Tabby keeps the last 100 lines of llama-server's output
# The root cause of a failed start can sit above a long traceback: diagnose from more lines.
DIAGNOSIS_LINES = 400
STOP_TIMEOUT_S = 20.0
_GUARDIAN_PID = re.compile(r"^vllm-ghost-guardian: pid (\d+)$")
_GUARDIAN_EXIT = re.compile(r"^vllm-ghost-guardian: exited (-?\d+)$")
_KEEPER_STOP = re.compile(r"^vllm-ghost-keeper: stopp(?:ing|ed) (.+)$")
FOLLOW_S = 0.1  # how often the launch's log and its keeper are looked at
KEEPER_GONE = "its keeper process went away"
STOPPED_ELSEWHERE = "model stopped by Stop Model in another window; Start Model loads it again"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Flags whose value is a secret: never on vLLM's command line (ps shows it to every user).
@dataclass(frozen=True)
class Download:
    """A hub id vLLM downloads on this start: its size (None: unknown) and the cache's bytes before."""

    repo_id: str
    size: int | None
    before: int = 0

    def progress(self, done: int) -> str:
        if self.size is None:
            return f"{hub.size_text(done)} of an unknown size"
        return f"{hub.size_text(done)} of {hub.size_text(self.size)} ({min(100, done * 100 // self.size)} %)"

    def to_wire(self, done: int) -> dict[str, object]:
        wire: dict[str, object] = {"model": self.repo_id, "bytes": done, "totalBytes": self.size}
        if self.size:
            wire["percent"] = min(100, done * 100 // self.size)
        return wire


StatusCallback = Callable[[Status], None]
LogCallback = Callable[[str], None]
WarningCallback = Callable[[str], None]


def _looks_local(path: str) -> bool:
    """A filesystem path rather than a hub id (`org/name`)."""
    return path.startswith(("/", "./", "../", "~")) or (len(path) > 2 and path[1] == ":" and path[2] in "\\/")


class ManagedVllm:
    """One language server's use of a shared vLLM (shared.py): `start` joins the vLLM that
    already serves these settings, or launches one under a keeper (keeper.py), and returns
    once it serves or has failed. Its output arrives through the launch's log file."""

    def __init__(self, settings: Settings, on_status: StatusCallback, on_log: LogCallback,
                 on_warning: WarningCallback | None = None, detail: dict[str, object] | None = None) -> None:
        self.settings = settings
        self._on_status = on_status
        self._on_log = on_log
        self._on_warning = on_warning or (lambda message: on_log(f"warning: {message}"))
        self.detail = dict(detail or {})  # added to every status this launch reports
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.diagnosis_lines: deque[str] = deque(maxlen=DIAGNOSIS_LINES)
        self.registry = Registry.for_settings(settings)
        self.state: SharedState | None = None
        self.launch: Launch | None = None
        self.joined = False  # attached to a vLLM another server launched
        self.vllm_pid: int | None = None
        self.exit_code: int | None = None
        self.ended_by: str | None = None  # the keeper's reason, when it stopped the launch
        self.keeper_exit: int | None = None  # the keeper's exit status, when this server launched it
        self.failure: Failure | None = None
        # Set the moment vLLM's API server is known to be gone (before its group is cleared).
        self.exited = asyncio.Event()
        self._keeper: subprocess.Popen[bytes] | None = None  # when this server launched it
        self._log: BinaryIO | None = None
        self._follower: asyncio.Task[None] | None = None
        self._stopping = False
        self.started_at = 0.0
        self.phase = ""  # what vLLM is doing while it starts (startup.py), for the status
        self.ready_after_s: float | None = None
        self.download: Download | None = None  # a hub id vLLM fetches on this start
        self._no_room: str | None = None  # why that download cannot fit the disk, if it cannot
        self._download_seen = 0.0

    @property
    def endpoint(self) -> Endpoint | None:
        if self.launch is None:
            return None
        return Endpoint(base_url=self.launch.base_url + "/v1", api_key=self.launch.api_key,
                        model=self.settings.model.name)

    @property
    def keeper_pid(self) -> int | None:
        return self.state.keeper.pid if self.state is not None else None

    @property
    def stopping(self) -> bool:
        return self._stopping

    def running(self) -> bool:
        return self.state is not None and not self.exited.is_set()

    def clients(self) -> int:
        """How many language servers use this vLLM now (this one included)."""
        current = self.registry.read_launch(self.state.launch_id) if self.state is not None else None
        return len(current.clients) if current is not None else 0

    def update(self, settings: Settings) -> None:
        """Supervision knobs changed (settings.SUPERVISION_FIELDS): keepAlive and a longer
        idleGraceS reach the keeper now. They are the most any window asked for, so turning
        keepAlive off or shortening the grace waits for the next launch."""
        old, self.settings = self.settings.vllm, settings
        vllm = settings.vllm
        state = self.state
        # Any other change (completion.*, maxRestarts...) has nothing to tell the keeper.
        if state is None or (vllm.keep_alive, vllm.idle_grace_s) == (old.keep_alive, old.idle_grace_s):
            return
        with self.registry.locked():
            current = self.registry.read_launch(state.launch_id)
            if current is None or not any(client.pid == os.getpid() for client in current.clients):
                return
            self.registry.write(current.with_client(Member.me(), vllm.keep_alive, vllm.idle_grace_s))
        if (current.keep_alive and not vllm.keep_alive) or current.grace_s > vllm.idle_grace_s:
            self._on_log("vllm.keepAlive / vllm.idleGraceS: the running vLLM keeps the most any window "
                         "asked for until it next starts")

    def _preflight(self) -> Failure | None:
        """Failures we can name before spending minutes on a launch."""
        vllm = self.settings.vllm
        if vllm.port and port_in_use(vllm.host, vllm.port):
            return Failure(f"Port {vllm.port} on {vllm.host} is already in use: set vllmGhost.vllm.port "
                           "to 0 (pick a free one) or stop the other server.", permanent=True)
        # The command as it will run: the default `vllm serve` may resolve to this Python's vLLM
        # module where no `vllm` script is on PATH (the GPU machine's install has none).
        program = resolve_command(vllm.command, {**os.environ, **vllm.env})[0]
        if shutil.which(program, path=vllm.env.get("PATH", os.environ.get("PATH"))) is None:
            return Failure(f"The vLLM command {vllm.command[0]!r} was not found: install vLLM "
                           "(pip install vllm) or set vllmGhost.vllm.command.", permanent=True)
        if self._no_room is not None:  # permanent: freeing the disk is the user's step, then Restart Model
            return Failure(self._no_room, permanent=True)
        path = self.settings.model.path
        if _looks_local(path) and not Path(path).expanduser().exists():
            # Not a failure yet: vllm.command may run vLLM elsewhere (a container, ssh),
            # where the path can exist. vLLM's own error is diagnosed if it does not.
            self._on_log(f"note: the model path {path!r} does not exist on this machine")
        return None

    def _security_warnings(self) -> None:
        vllm = self.settings.vllm
        if not is_loopback(vllm.host):
            self._on_warning(f"vLLM listens on {vllm.host}, not only this machine (vllmGhost.vllm.host): "
                             "anyone who can reach the port can use the model; the API key is its only guard.")
        _, removed = strip_secret_flags(vllm.args)
        if removed:
            self._on_warning(f"{', '.join(sorted(set(removed)))} removed from vllmGhost.vllm.args: it would show "
                             "the key to every user (ps); vLLM Ghost passes its own key by environment.")

    # --- start: join or launch ------------------------------------------------------------------
    async def start(self) -> bool:
        """Join or launch vLLM and wait until /health answers; False (and `failure` says why) otherwise."""
        self._stopping = False
        self.ready_after_s = None
        self.started_at = time.monotonic()
        self.phase = ""
        self._security_warnings()
        await self._announce_download()
        state = await self._join_or_launch()
        if state is None:
            return False
        self.state = state
        self.vllm_pid = state.vllm_pid
        if self.launch is None:  # joined: only what the state says
            self.launch = Launch(argv=[], env={}, host=state.host, port=state.port, api_key=state.api_key)
        self._log = self.registry.log_path(state.log).open("rb")
        if self.joined:
            self._log.seek(0, os.SEEK_END)  # what vLLM says from now on; it loaded without us
        self._follower = asyncio.create_task(self._follow())
        ok = await self._wait_ready(self.launch)
        if not ok and not self._stopping:
            await self.stop(report=False)
        return ok

    async def _join_or_launch(self) -> SharedState | None:
        """Attach to the registered vLLM, or launch one; wait out one that is stopping (its
        GPU memory is not free yet). None when the launch cannot even begin (`failure`)."""
        deadline = time.monotonic() + STOP_TIMEOUT_S + 10
        said = False
        while True:
            with self.registry.locked():
                state = self.registry.read()
                if state is not None and not state.keeper.alive():
                    self._clear_stale(state)
                    state = None
                if state is None:
                    return self._launch()
                if state.phase == "running":
                    state = state.with_client(Member.me(), self.settings.vllm.keep_alive,
                                              self.settings.vllm.idle_grace_s)
                    self.registry.write(state)
                    self.joined = True
                    self._on_log(f"joining the vLLM for {self.settings.model.name} that process "
                                 f"{state.keeper.pid} keeps ({len(state.clients)} servers use it)")
                    self._status("starting", f"Joining the running vLLM for {self.settings.model.name}",
                                 shared=True)
                    return state
            if time.monotonic() > deadline:
                self.failure = Failure("The previous vLLM for these settings did not stop; "
                                       "run 'vLLM Ghost: Restart Model'.")
                return None
            if not said:
                said = True
                self._status("starting", f"Waiting for the previous vLLM for {self.settings.model.name} to stop")
            await asyncio.sleep(0.2)

    async def _announce_download(self) -> None:
        """A hub id not in the cache yet: say how much vLLM is about to download (before it does)."""
        path, env = self.settings.model.path, {**os.environ, **self.settings.vllm.env}
        self._no_room = None
        if not hub.is_hub_id(path) or hub.is_cached(path, env):
            self.download = None
            return
        size = await asyncio.to_thread(hub.download_size, path, env)
        self.download = Download(path, size, hub.downloaded_bytes(path, env))
        self._no_room = hub.lacks_room(path, size, self.download.before, env)
        where = hub.hub_cache(env)
        self._on_log(f"{path} is not downloaded yet: vLLM downloads it from the Hugging Face hub into {where} "
                     f"({hub.size_text(size)}) before loading it")
        if self._no_room is None:  # else the start stops at once (_preflight) and says why
            self._status("starting", f"Downloading {path} ({hub.size_text(size)})", download=self.download.to_wire(0))

    def _report_download(self) -> None:
        """Bytes in the hub cache, once a second while vLLM downloads (its own progress bars are not lines)."""
        download = self.download
        if download is None or self.ready_after_s is not None or self._stopping or self.exited.is_set():
            return
        now = time.monotonic()
        if now - self._download_seen < 1.0:
            return
        self._download_seen = now
        env = {**os.environ, **self.settings.vllm.env}
        done = max(0, hub.downloaded_bytes(download.repo_id, env) - download.before)
        if done == 0 or (download.size is not None and done >= download.size):
            return  # not begun, or done: vLLM's lines say what it does next
        self._status("loading", f"Downloading {download.repo_id}: {download.progress(done)}",
                     download=download.to_wire(done))

    def _clear_stale(self, state: SharedState) -> None:
        """A state whose keeper died without cleaning up (it was SIGKILLed, the machine slept...)."""
        self._on_log(f"removing a stale vLLM registration (keeper {state.keeper.pid} is gone)")
        if state.vllm_pid is not None and group_alive(state.vllm_pid):
            # A pid is not reused while its process group lives: this group is that vLLM's.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(state.vllm_pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            self.registry.log_path(state.log).unlink()
        self.registry.remove(state.launch_id)

    def _launch(self) -> SharedState | None:
        """Start the keeper and register the launch (the caller holds the registry lock)."""
        self.failure = self._preflight()
        if self.failure is not None:
            return None
        compiler = missing_compiler({**os.environ, **self.settings.vllm.env})
        launch = build_launch(self.settings)
        if not proc_is_ours():
            self._on_log("note: /proc is not mounted here (a chroot or a container?): vLLM reads it at start-up "
                         "and fails without it, unless vllm.command runs it elsewhere")
        if compiler:
            self._on_log(f"note: no C++ compiler ({compiler!r}; the CXX variable names another) on this machine: "
                         "vLLM runs its torch.compile functions uncompiled (TORCHDYNAMO_DISABLE=1); install g++ "
                         "to compile them")
        launch_id = secrets.token_hex(8)
        log_name = self.registry.log_name(launch_id)
        self._status("starting", f"Starting vLLM for {self.settings.model.name}")
        self._on_log(f"starting vLLM: {' '.join(launch.argv)}")
        log_fd = os.open(self.registry.log_path(log_name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            self._keeper = subprocess.Popen(
                [sys.executable, "-m", "langserver.backend.keeper", str(self.registry.root), self.registry.id,
                 launch_id, *launch.argv],
                stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, env=launch.env,
                # Its own session: it must outlive this server when other windows use the model,
                # and a signal to our process group (a terminal's Ctrl-C) is not for it.
                start_new_session=True,
            )
        finally:
            os.close(log_fd)
        vllm = self.settings.vllm
        state = SharedState(launch_id=launch_id, keeper=Member.of(self._keeper.pid), host=launch.host,
                            port=launch.port, api_key=launch.api_key, log=log_name, model=self.settings.model.name,
                            started_at=time.time(), clients=(Member.me(),), keep_alive=vllm.keep_alive,
                            grace_s=vllm.idle_grace_s)
        self.registry.write(state)
        self.launch = launch
        self.joined = False
        return state

    async def _wait_ready(self, launch: Launch) -> bool:
        deadline = self.started_at + self.settings.vllm.startup_timeout_s
        async with httpx.AsyncClient(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self.exited.is_set():
                    if self._follower is not None:
                        await asyncio.wait([self._follower], timeout=2.0)
                    if self._stopping:
                        return False
                    self.failure = self._start_failure()
                    return False
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(launch.base_url + "/health")).status_code == 200:
                        self.ready_after_s = time.monotonic() - self.started_at
                        self._refresh_pid()
                        return True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.exited.wait(), 0.5)
        self.failure = Failure(f"vLLM did not become ready within {self.settings.vllm.startup_timeout_s:g} s "
                               "(vllmGhost.vllm.startupTimeoutS).", permanent=False)
        return False

    def _start_failure(self) -> Failure:
        if self.ended_by == KEEPER_GONE and self.vllm_pid is None:
            return self._keeper_failure()
        if self.ended_by == STOPPED:
            return Failure(STOPPED_ELSEWHERE, stopped=True)
        if self.joined and self.ended_by is not None and not self.diagnosis_lines:
            return Failure(f"the shared vLLM stopped while this window was joining it ({self.ended_by})",
                           expected=True)
        diagnosis = classify(list(self.diagnosis_lines))
        # A port we picked ourselves can be taken in between: that one is worth a retry.
        permanent = diagnosis.permanent and not ("port" in diagnosis.advice and not self.settings.vllm.port)
        return Failure(diagnosis.advice, permanent=permanent, exit_code=self.exit_code)

    def _keeper_failure(self) -> Failure:
        """The keeper died before it started vLLM: nothing a retry of the same launch fixes (it
        is this machine: a broken environment, a missing /proc...), so say all we know at once."""
        assert self.state is not None
        code = self.keeper_exit
        how = ("exited" if code is None else f"was killed by signal {-code}" if code < 0
               else f"exited with code {code}")
        said = list(self.diagnosis_lines)[-3:]
        message = f"vLLM's keeper process (pid {self.state.keeper.pid}) {how} before vLLM started"
        message += f": {' | '.join(said)}" if said else " and wrote nothing to its log"
        if not proc_is_ours():
            message += "; /proc is not mounted for this process (a chroot or container?)"
        message += ". Run `vllm-ghost doctor`, fix the cause, then 'vLLM Ghost: Restart Model'."
        return Failure(message, permanent=True, exit_code=code)

    # --- following the launch -------------------------------------------------------------------
    async def _follow(self) -> None:
        """Read the launch's log as it grows; notice when the keeper is gone."""
        assert self._log is not None and self.state is not None
        pending = b""
        keeper = self.state.keeper
        while True:
            pending = self._read_lines(pending)
            self._report_download()
            self._refresh_pid()
            if self._keeper is not None:
                self.keeper_exit = self._keeper.poll()  # reap it, or it looks alive as a zombie
            if self.exited.is_set() and self.ended_by is not None:
                return
            if not keeper.alive():
                self._read_lines(pending + b"\n")
                if self.ended_by is None:
                    self.ended_by = KEEPER_GONE
                self._mark_exited(self.exit_code)
                return
            await asyncio.sleep(FOLLOW_S)

    def _refresh_pid(self) -> None:
        """A server that joined before vLLM was up learns its pid from the keeper's record."""
        if self.vllm_pid is None and self.state is not None:
            current = self.registry.read_launch(self.state.launch_id)
            if current is not None:
                self.vllm_pid = current.vllm_pid

    def _read_lines(self, pending: bytes) -> bytes:
        assert self._log is not None
        with contextlib.suppress(OSError):
            if os.fstat(self._log.fileno()).st_size < self._log.tell():
                self._log.seek(0)  # the keeper cut a long log back
        data = pending + self._log.read()
        *lines, rest = data.split(b"\n")
        for raw in lines:
            self._on_line(raw)
        return rest

    def _on_line(self, raw: bytes) -> None:
        line = _ANSI.sub("", raw.decode("utf-8", "replace").rstrip())
        if not line:
            return
        if match := _GUARDIAN_PID.match(line):
            self.vllm_pid = int(match.group(1))
            return
        if match := _GUARDIAN_EXIT.match(line):
            self._mark_exited(int(match.group(1)))
            return
        if match := _KEEPER_STOP.match(line):
            self.ended_by = self.ended_by or match.group(1)
            self._mark_exited(self.exit_code)
            return
        self.tail.append(line)
        self.diagnosis_lines.append(line)
        self._on_log(line)
        if self.ready_after_s is None and not self._stopping and not self.exited.is_set():
            self.phase = startup.phase_of(line) or self.phase
            elapsed = time.monotonic() - self.started_at
            phase = f": {self.phase}" if self.phase else ""
            self._status("loading", f"Loading {self.settings.model.name} ({elapsed:.0f} s){phase}", line=line[-200:],
                         phase=self.phase)

    def _mark_exited(self, code: int | None) -> None:
        if self.exit_code is None:
            self.exit_code = code
        self.exited.set()

    async def wait_exited(self) -> int | None:
        await self.exited.wait()
        return self.exit_code

    # --- leaving --------------------------------------------------------------------------------
    async def stop(self, report: bool = True, graceful: bool = True, by_user: bool = False) -> None:
        """Stop this launch for every server that uses it, and every process it started;
        idempotent. `graceful`: give vLLM the guardian's grace to shut down cleanly. `by_user`:
        Stop Model, which the other servers hear of and do not undo by rejoining (always graceful)."""
        self._stopping = True
        state = self.state
        if state is not None:
            how = signal.SIGUSR2 if by_user else signal.SIGTERM if graceful else signal.SIGUSR1
            with self.registry.locked():
                if self.registry.read_launch(state.launch_id) is not None and state.keeper.alive():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(state.keeper.pid, how)
            if not await self._keeper_gone(STOP_TIMEOUT_S):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(state.keeper.pid, signal.SIGKILL)
            await self._clear_group()
        await self._close()
        if report:
            self._status("stopped", "vLLM stopped")

    async def release(self, stop_if_last: bool = False, graceful: bool = True) -> None:
        """Stop using this vLLM. Others may go on using it; when nobody does, the keeper stops
        it after vllm.idleGraceS, or right now when `stop_if_last` (or the grace is 0), then
        `graceful`ly or not (an exiting server waits for nobody)."""
        self._stopping = True
        state = self.state
        if state is None:
            await self._close()
            return
        with self.registry.locked():
            current = self.registry.read_launch(state.launch_id)
            last = False
            if current is not None:
                rest = current.without_client(os.getpid())
                last = not rest.clients and not rest.keep_alive
                stop_now = last and (stop_if_last or rest.grace_s == 0)
                if not stop_now:  # (when it is, the keeper must not see it idle first: it would stop gracefully)
                    self.registry.write(rest)
            else:
                stop_now = True  # it is on its way out already: make sure it is gone
        if stop_now:
            await self.stop(report=False, graceful=graceful)
            return
        self._on_log("left the shared vLLM " + ("(it stops when idle)" if last else "(other servers still use it)"))
        await self._close()

    async def _keeper_gone(self, timeout: float) -> bool:
        assert self.state is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._keeper is not None:
                self._keeper.poll()
            if not self.state.keeper.alive():
                return True
            await asyncio.sleep(0.05)
        return False

    async def _clear_group(self) -> None:
        """The guardian clears vLLM's group; if it was killed first, finish the job here."""
        if self.vllm_pid is None:
            return
        deadline = time.monotonic() + 3.0
        while group_alive(self.vllm_pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if group_alive(self.vllm_pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.vllm_pid, signal.SIGKILL)

    async def _close(self) -> None:
        follower, self._follower = self._follower, None
        if follower is not None and not follower.done():
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._keeper is not None:
            self._keeper.poll()

    def _status(self, state: str, message: str, **detail: object) -> None:
        self._on_status(Status(state=state, message=message, detail={**self.detail, **detail}))  # type: ignore[arg-type]
