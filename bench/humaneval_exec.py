"""Running HumanEval test programs safely: one child process at a time, each program in
fresh globals under a CPU-time limit, a wall-clock limit, a memory limit, no network.
Shared by scripts/bench-quality's scripted-noise and model benchmarks.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import tempfile
from multiprocessing.connection import Connection, Pipe
from typing import Any

# The slowest canonical program takes 0.3 s of CPU here; broken variants that loop
# forever are common in the ablation, so the CPU limit is kept tight.
CPU_LIMIT_S = 0.5
TIMEOUT_S = 15.0  # wall clock, for programs that sleep, block or swallow the CPU limit; generous
# because on a loaded machine (2 cores shared with several vLLMs) 3 s failed passing programs
MEMORY_BYTES = 2 << 30


def _no_network() -> None:
    """A new network namespace has no interfaces; if unshare is not allowed, sockets fail."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.unshare(0x10000000 | 0x40000000)  # CLONE_NEWUSER | CLONE_NEWNET
    except Exception:
        pass
    import socket

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError("network disabled in the benchmark")

    socket.socket = refuse  # type: ignore[assignment, misc]
    socket.create_connection = refuse


class _CpuLimit(Exception):
    pass


def _on_cpu_limit(signum: int, frame: Any) -> None:
    raise _CpuLimit


class Runner:
    """A child process that runs test programs one after another, each in fresh globals
    under a CPU-time limit; replaced when a program hangs it past the wall-clock limit
    or kills it. (A fork per program costs about 25 ms here, more than most tests.)
    The child has no network (own network namespace, sockets refused), a memory limit,
    stdio on /dev/null and a temporary working directory."""

    def __init__(self) -> None:
        self._pid = 0
        self._conn: Connection | None = None

    def _start(self) -> Connection:
        ours, theirs = Pipe()
        pid = os.fork()
        if pid == 0:
            ours.close()
            self._serve(theirs)
        theirs.close()
        self._pid, self._conn = pid, ours
        return ours

    @staticmethod
    def _serve(conn: Connection) -> None:
        try:
            _no_network()
            resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.chdir(tempfile.mkdtemp(prefix="bench-quality-"))
            signal.signal(signal.SIGPROF, _on_cpu_limit)
            while True:
                try:
                    source = conn.recv()
                except EOFError:
                    break
                passed = False
                try:
                    signal.setitimer(signal.ITIMER_PROF, CPU_LIMIT_S)
                    exec(compile(source, "<task>", "exec"), {"__name__": "__main__"})
                    passed = True
                except BaseException:
                    passed = False
                finally:
                    signal.setitimer(signal.ITIMER_PROF, 0)
                conn.send(passed)
        finally:
            os._exit(0)

    def run(self, source: str) -> bool:
        conn = self._conn or self._start()
        try:
            conn.send(source)
            if conn.poll(TIMEOUT_S):
                return bool(conn.recv())
        except (EOFError, OSError):
            pass
        self.stop()  # hung or died: the next program gets a fresh child
        return False

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
            os.waitpid(self._pid, 0)
        self._conn, self._pid = None, 0


_RUNNER = Runner()


def execute(source: str) -> bool:
    """Run one program: True when its tests pass within the limits."""
    try:
        compile(source, "<task>", "exec")
    except (SyntaxError, ValueError):
        return False
    return _RUNNER.run(source)


def stop() -> None:
    """End the runner's child (it is started again by the next `execute`)."""
    _RUNNER.stop()
