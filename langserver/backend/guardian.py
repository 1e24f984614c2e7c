"""Guardian: runs vLLM in its own process group and kills that group when the
language server goes away, however it goes (clean exit, crash, SIGKILL).

The language server holds the only write end of our stdin; the kernel closes it
when the server dies, so EOF on stdin is a death notice that needs no
co-operation from the server. vLLM's EngineCore outlives a killed API server
(vLLM issues 55510, 34816), hence the whole group, not just the child.

Two processes, because the server's direct child is not safe: asyncio kills a
still-running child with SIGKILL when the server's interpreter exits without
stopping it, and nothing can clean up after a SIGKILL. So the direct child (the
"outer" guardian) only waits; its forked child, the watcher, starts vLLM and
watches stdin, its parent and vLLM. Whichever of them dies, the watcher clears
vLLM's group:

    language server --stdin pipe--> outer guardian --fork--> watcher --setsid--> vLLM (+ EngineCore, workers)

On stdin: "stop" then EOF is a requested stop (vLLM gets GRACE_S to shut down
cleanly); EOF alone means the server died (ORPHAN_GRACE_S, then SIGKILL).

Lines on stdout for the server (vLLM's own output shares the pipe):
    vllm-ghost-guardian: pid N        vLLM started; N is its pid and process group
    vllm-ghost-guardian: exited C     vLLM's API server ended (C: exit code, -signal);
                                      sent before the group is cleared, so the server
                                      can fail in-flight requests at once

Usage: python -m langserver.backend.guardian VLLM_ARGV...
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time

# How long vLLM gets between SIGTERM and SIGKILL. A stop the server asks for
# ("stop" on stdin, then EOF) may take a moment to shut down cleanly; when the
# server died (bare EOF, a signal), nobody waits for vLLM, and "no process left
# 5 s after the editor died" is the promise: an engine busy loading weights
# handles SIGTERM only once it is back in Python, which can take seconds.
GRACE_S = 5.0
ORPHAN_GRACE_S = 1.5
STOP_REQUEST = b"stop"
PR_SET_PDEATHSIG = 1
PARENT_ENV = "VLLM_GHOST_PARENT_PID"
PREFIX = "vllm-ghost-guardian:"


def _die_with_parent(signum: int = signal.SIGTERM) -> None:
    """The kernel signals us when our parent dies (Linux only; a no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signum)
    except (OSError, AttributeError):
        pass


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _say(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(f"{PREFIX} {message}", file=sys.stderr, flush=True)


def kill_group(pgid: int, child: subprocess.Popen[bytes] | None = None, grace_s: float = GRACE_S) -> None:
    """SIGTERM the group (and SIGCONT, so stopped members see it), wait, then SIGKILL what is left."""
    try:
        os.killpg(pgid, signal.SIGTERM)
        os.killpg(pgid, signal.SIGCONT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if child is not None:
            child.poll()  # reap the API server, or the group never looks empty
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    if child is not None:
        child.poll()


def _exit_status(code: int) -> int:
    return code if code >= 0 else 128 - code


def _watch(argv: list[str], outer_pid: int) -> int:
    """The watcher: start vLLM, wait for a reason to stop, clear its group."""
    _die_with_parent()
    if os.getppid() != outer_pid:
        return 1  # the outer guardian died before we got here
    stop = threading.Event()
    asked = threading.Event()  # the server asked for this stop (and is alive to wait for it)

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    try:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as err:
        _say(f"cannot start {argv[0]}: {err.strerror}")
        return 127
    pgid = child.pid
    _say(f"pid {pgid}")

    def watch_stdin() -> None:
        # os.read, not sys.stdin: a daemon thread blocked in a buffered read
        # aborts the interpreter at exit.
        with contextlib.suppress(OSError):
            while data := os.read(0, 4096):
                if STOP_REQUEST in data:
                    asked.set()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    while not stop.is_set() and child.poll() is None and os.getppid() == outer_pid:
        stop.wait(0.1)
    code = child.poll()
    if code is not None:
        _say(f"exited {code}")
    # Whether asked to stop or the API server died, clear the group: orphaned
    # engine processes would keep holding GPU memory.
    kill_group(pgid, child, GRACE_S if asked.is_set() else ORPHAN_GRACE_S)
    code = child.wait()
    return _exit_status(code)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m langserver.backend.guardian VLLM_ARGV...", file=sys.stderr)
        return 2
    _die_with_parent()
    expected = os.environ.pop(PARENT_ENV, "")
    if (expected and str(os.getppid()) != expected) or os.getppid() == 1:
        return 1  # the server died before we got here
    outer = os.getpid()
    watcher = os.fork()
    if watcher == 0:
        code = 1
        try:
            code = _watch(argv, outer)
        finally:
            os._exit(code)

    def forward(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(watcher, signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    while True:
        try:
            _, status = os.waitpid(watcher, 0)
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
    return _exit_status(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
