"""Guardian: runs vLLM in its own process group and kills that group when the
language server goes away, however it goes (clean exit, crash, SIGKILL).

The language server holds the only write end of our stdin; the kernel closes it
when the server dies, so EOF on stdin is a death notice that needs no
co-operation from the server. vLLM's EngineCore outlives a killed API server
(vLLM issues 55510, 34816), hence the whole group, not just the child.

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

GRACE_S = 10.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Belt and braces: the kernel also signals us when the server dies (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(pgid: int, child: subprocess.Popen[bytes], grace_s: float = GRACE_S) -> None:
    """SIGTERM the group, wait for it to drain, then SIGKILL what is left."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        child.poll()
        if not _group_alive(pgid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    child.poll()


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m langserver.backend.guardian VLLM_ARGV...", file=sys.stderr)
        return 2
    _die_with_parent()
    if os.getppid() == 1:
        return 1  # the server died before we got here
    try:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as err:
        print(f"vllm-ghost-guardian: cannot start {argv[0]}: {err.strerror}", file=sys.stderr, flush=True)
        return 127
    pgid = child.pid
    print(f"vllm-ghost-guardian: pid {pgid}", file=sys.stderr, flush=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)

    def watch_stdin() -> None:
        # os.read, not sys.stdin: a daemon thread blocked in a buffered read
        # aborts the interpreter at exit.
        with contextlib.suppress(OSError):
            while os.read(0, 4096):
                pass
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    while not stop.is_set() and child.poll() is None:
        stop.wait(0.2)
    # Whether asked to stop or the API server died, clear the group: orphaned
    # engine processes would keep holding GPU memory.
    kill_group(pgid, child)
    code = child.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
