"""Liveness without /proc (issue 27): in a plain chroot every /proc/PID lookup fails, and the
server took its live keeper for dead. shared.proc_is_ours notices and liveness falls back to
kill(pid, 0). Here /proc is unmounted in a private mount namespace (needs root, a second)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PROBE = """
import json, os, subprocess, sys
from langserver import doctor
from langserver.backend.shared import Member, proc_is_ours
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
member = Member.of(child.pid)
alive = member.alive()
child.kill(); child.wait()
print(json.dumps({"ours": proc_is_ours(), "me": Member.me().alive(), "child": alive, "gone": member.alive(),
                  "doctor": doctor.check_proc().level}))
"""


def probe(unmount: bool) -> dict[str, object]:
    script = ("umount -l /proc && " if unmount else "") + 'exec "$@"'
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh",
                           sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.skipif(os.geteuid() != 0, reason="unmounting /proc in a mount namespace needs root")
@pytest.mark.parametrize("unmount", [False, True], ids=["with-proc", "without-proc"])
def test_live_processes_look_alive_and_dead_ones_dead_with_or_without_proc(unmount: bool) -> None:
    result = probe(unmount)
    assert result["ours"] is (not unmount)
    assert result["me"] is True and result["child"] is True, result
    assert result["gone"] is False, result
    assert result["doctor"] == ("warn" if unmount else "ok")
