"""Keeper: owns one shared vLLM (see shared.py) for as long as any language server uses it.

The language server that launches a shared vLLM starts the keeper in a session of
its own, so that it survives that server: other windows may be attached. The
keeper runs vLLM under the guardian (guardian.py), copies vLLM's output into the
launch's log file for every client to read, drops dead clients from the state
file, and stops vLLM when:

- no client is left for `grace_s` (unless `keep_alive`): the last window closed.
  A short grace lets a window reload find the model still loaded;
- a client asks (SIGTERM: graceful, for a restart or a settings change;
  SIGUSR1: quick; SIGUSR2: graceful, the user's Stop Model: the others stay stopped too);
- vLLM exits, or the state file no longer names this launch.

If the keeper itself is killed, the guardian sees its stdin close and clears
vLLM's process group: nothing is orphaned either way.

Lines it adds to the log (besides the guardian's own `vllm-ghost-guardian:` lines):
    vllm-ghost-keeper: stopping REASON     on its way out: the launch is over for its clients
    vllm-ghost-keeper: stopped REASON      every process of the launch is gone

Usage: python -m langserver.backend.keeper REGISTRY_DIR ID LAUNCH_ID VLLM_ARGV...
(the environment carries VLLM_API_KEY; it never goes on a command line)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from langserver.backend.guardian import PARENT_ENV, STOP_REQUEST, kill_group
from langserver.backend.shared import Registry, SharedState

PREFIX = "vllm-ghost-keeper:"
POLL_S = 0.2
STOP_TIMEOUT_S = 20.0
# vLLM logs every request: a log that served for weeks is cut back to nothing past this size.
LOG_LIMIT = 16 * 1024 * 1024
_PID_LINE = re.compile(rb"^vllm-ghost-guardian: pid (\d+)")

# Why the keeper stops, as its last log line says it; clients read it.
IDLE = "idle: no window uses it"
ABANDONED = "idle: every window using it went away"
REQUESTED = "requested by a window"
STOPPED = "Stop Model in a window"
EXITED = "vLLM exited"
REPLACED = "its state file was removed or replaced"


class Keeper:
    def __init__(self, registry: Registry, launch_id: str, argv: list[str]) -> None:
        self.registry = registry
        self.launch_id = launch_id
        self.argv = argv
        self.stop_reason: str | None = None
        self.quick = False
        self.vllm_pid: int | None = None
        self._log_fd = -1
        self._idle_since: float | None = None

    def run(self) -> int:
        state = self._state()
        if state is None:
            # The launching server died before it wrote the state, or took this keeper for dead and
            # cleared it. stderr is the launch's log until the state names it: say why we leave.
            print(f"{PREFIX} exiting before vLLM started: launch {self.launch_id} is not registered in "
                  f"{self.registry.state_path}", file=sys.stderr, flush=True)
            return 1
        self._log_fd = os.open(self.registry.log_path(state.log), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        guardian = subprocess.Popen(
            [sys.executable, "-m", "langserver.backend.guardian", *self.argv],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, PARENT_ENV: str(os.getpid())},
        )
        copier = threading.Thread(target=self._copy_output, args=(guardian,), daemon=True)
        copier.start()
        while self.stop_reason is None:
            time.sleep(POLL_S)
            if guardian.poll() is not None:
                self.stop_reason = self.stop_reason or EXITED
            elif self.stop_reason is None:  # a signal may have asked for the stop during the sleep
                self._check_clients()
        self._mark_stopping()
        self._stop(guardian)
        copier.join(timeout=2.0)
        with self.registry.locked():
            self.registry.remove(self.launch_id)
        self._say(f"stopped {self.stop_reason}")
        return 0

    def _state(self) -> SharedState | None:
        with self.registry.locked():
            return self.registry.read_launch(self.launch_id)

    def _check_clients(self) -> None:
        """Drop dead clients; decide whether the launch is idle for long enough to stop."""
        with self.registry.locked():
            state = self.registry.read_launch(self.launch_id)
            if state is None:
                self.stop_reason = REPLACED
                return
            alive = tuple(client for client in state.clients if client.alive())
            abandoned = not alive and len(state.clients) > 0
            if alive != state.clients:
                state = dataclasses.replace(state, clients=alive)
                self.registry.write(state)
        if state.clients or state.keep_alive:
            self._idle_since = None
            return
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
            self.quick = self.quick or abandoned  # nobody is left to wait for a graceful shutdown
        if now - self._idle_since >= state.grace_s:
            self.stop_reason = ABANDONED if self.quick else IDLE

    def _update(self, **changes: Any) -> None:
        """Change fields of this launch's state, unless it is no longer this launch's."""
        with self.registry.locked():
            state = self.registry.read_launch(self.launch_id)
            if state is not None:
                self.registry.write(dataclasses.replace(state, **changes))

    def _record_pid(self) -> None:
        self._update(vllm_pid=self.vllm_pid)

    def _mark_stopping(self) -> None:
        """No client may attach to a launch on its way out; launchers wait for it to finish."""
        self._update(phase="stopping", reason=self.stop_reason or "")
        self._say(f"stopping {self.stop_reason}")  # clients fail their requests now, not at the socket error

    def _stop(self, guardian: subprocess.Popen[bytes]) -> None:
        if guardian.poll() is None:
            assert guardian.stdin is not None
            with contextlib.suppress(OSError):
                if not self.quick:
                    guardian.stdin.write(STOP_REQUEST + b"\n")
                    guardian.stdin.flush()
                guardian.stdin.close()  # EOF: the guardian clears vLLM's group
            try:
                guardian.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                guardian.kill()
                guardian.wait()
        # The guardian was killed before its clean-up ran: finish it. (Only then: after a clean
        # exit the group is gone and its number may already belong to someone else.)
        if guardian.returncode < 0 and self.vllm_pid is not None:
            kill_group(self.vllm_pid, grace_s=1.0)

    def _copy_output(self, guardian: subprocess.Popen[bytes]) -> None:
        assert guardian.stdout is not None
        for raw in iter(guardian.stdout.readline, b""):
            match = _PID_LINE.match(raw)
            if match:
                self.vllm_pid = int(match.group(1))
                self._record_pid()  # before vLLM can answer /health: every client reports the same pid
            self._write(raw)

    def _write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            if os.fstat(self._log_fd).st_size > LOG_LIMIT:
                os.ftruncate(self._log_fd, 0)  # readers notice the file got shorter and start over
            os.write(self._log_fd, data)

    def _say(self, message: str) -> None:
        self._write(f"{PREFIX} {message}\n".encode())

    def request_stop(self, quick: bool, reason: str = REQUESTED) -> None:
        self.quick = self.quick or quick
        self.stop_reason = self.stop_reason or reason


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print("usage: python -m langserver.backend.keeper REGISTRY_DIR ID LAUNCH_ID VLLM_ARGV...", file=sys.stderr)
        return 2
    root, registry_id, launch_id, *command = argv
    keeper = Keeper(Registry(registry_id, Path(root)), launch_id, command)
    signal.signal(signal.SIGTERM, lambda signum, frame: keeper.request_stop(quick=False))
    signal.signal(signal.SIGUSR1, lambda signum, frame: keeper.request_stop(quick=True))
    signal.signal(signal.SIGINT, lambda signum, frame: keeper.request_stop(quick=False))
    signal.signal(signal.SIGUSR2, lambda signum, frame: keeper.request_stop(quick=False, reason=STOPPED))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the terminal or window that started it closing is no reason
    return keeper.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
