"""Tools for the fault-injection suite (tests/test_faults_*.py): the scripted
server as a subprocess, a /proc scan for leftover processes, and the fault
report that scripts/bench-faults prints as a table."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.lsp import GhostClient, start_session
from bench.options import server_options

ROOT = Path(__file__).resolve().parent.parent
SCRIPTED = ROOT / "tests" / "scripted_server.py"
REPORT_ENV = "VLLM_GHOST_FAULT_REPORT"


# --- the scripted server (see tests/scripted_server.py) ---------------------------------------------
class ScriptedProcess:
    """The scripted OpenAI-compatible server, run as its own process (external-mode faults)."""

    def __init__(self, *args: str, key: str = "") -> None:
        env = {**os.environ, "VLLM_API_KEY": key}
        self.process = subprocess.Popen([sys.executable, str(SCRIPTED), "--host", "127.0.0.1", "--port", "0", *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        if "listening on" not in line:
            raise RuntimeError(f"scripted server did not start: {line!r}")
        self.port = int(line.rsplit(" ", 1)[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


async def script(url: str, **script: Any) -> None:
    """Tell a scripted server (by base URL, without /v1) what to do next."""
    async with httpx.AsyncClient(timeout=5) as http:
        (await http.post(url + "/_script", json=script)).raise_for_status()


async def received(url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(url + "/_requests")
        answer.raise_for_status()
        result: list[dict[str, Any]] = answer.json()
        return result


async def info(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as http:
        result: dict[str, Any] = (await http.get(url + "/_info")).json()
        return result


def external_scripted_options(url: str, key: str = "", **completion: Any) -> dict[str, Any]:
    return server_options("tiny", url=url, api_key=key, **{"timeoutMs": 3000, "debounceMs": 0, **completion})


def managed_scripted_options(*server_args: str, model: str = "scripted-model", **vllm: Any) -> dict[str, Any]:
    """The scripted server as the *managed* vLLM: the supervisor starts, watches and restarts it."""
    return server_options("tiny", model=model, vllm={
        "command": [sys.executable, str(SCRIPTED), *server_args], "args": [], "startupTimeoutS": 60,
        "healthIntervalS": 0.5, "idleGraceS": 0, **vllm}, timeoutMs=3000, debounceMs=0)


def own_scripted_options(**vllm: Any) -> dict[str, Any]:
    """managed_scripted_options with a model path of their own per test: the servers started with
    them share a vLLM with nobody else's."""
    return managed_scripted_options(model=f"scripted-{uuid.uuid4().hex[:12]}", **vllm)


# --- processes ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgrp: int
    sid: int
    start: int  # clock ticks after boot: (pid, start) names one process even after pid reuse
    cmdline: str
    environ: str = field(repr=False, default="")


def _read_proc(pid: int, with_environ: bool = False) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        environ = ""
        if with_environ:
            with contextlib.suppress(OSError):
                environ = Path(f"/proc/{pid}/environ").read_bytes().replace(b"\0", b"\n").decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None  # a zombie holds nothing; its parent just has not reaped it
    return Proc(pid=pid, ppid=int(fields[1]), pgrp=int(fields[2]), sid=int(fields[3]), start=int(fields[19]),
                cmdline=cmdline.strip(), environ=environ)


def all_procs(with_environ: bool = False) -> list[Proc]:
    procs = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            proc = _read_proc(int(entry), with_environ)
            if proc is not None:
                procs.append(proc)
    return procs


def tree(root: int) -> dict[int, Proc]:
    """The live process tree under (and including) root."""
    procs = all_procs()
    children: dict[int, list[Proc]] = {}
    for proc in procs:
        children.setdefault(proc.ppid, []).append(proc)
    found: dict[int, Proc] = {}
    stack = [proc for proc in procs if proc.pid == root]
    while stack:
        proc = stack.pop()
        found[proc.pid] = proc
        stack.extend(children.get(proc.pid, []))
    return found


def leftovers(snapshot: dict[int, Proc], markers: tuple[str, ...] = ()) -> list[Proc]:
    """Live processes that belong to what the snapshot saw: the same process (pid and start
    time), the same process group or session (vLLM's is its own; EngineCore renames itself,
    so its command line names nothing), or a marker (unique model path, port, tag) in the
    command line or environment."""
    own = {os.getpgrp(), os.getsid(0), 0, 1}
    groups = {proc.pgrp for proc in snapshot.values()} | {proc.sid for proc in snapshot.values()}
    groups -= own
    me = os.getpid()
    found = []
    for proc in all_procs(with_environ=bool(markers)):
        if proc.pid == me:
            continue
        seen = snapshot.get(proc.pid)
        if (seen is not None and seen.start == proc.start) or proc.pgrp in groups or proc.sid in groups \
                or any(marker in proc.cmdline or marker in proc.environ for marker in markers):
            found.append(proc)
    return found


async def wait_no_leftovers(snapshot: dict[int, Proc], markers: tuple[str, ...], timeout: float) -> list[Proc]:
    deadline = time.monotonic() + timeout
    while True:
        left = leftovers(snapshot, markers)
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.1)


def kill_leftovers(procs: list[Proc]) -> None:
    """Clean up after a failed orphan check, so one failure does not poison the machine."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, signal.SIGKILL)


def describe(procs: list[Proc]) -> str:
    return "; ".join(f"{proc.pid} (pgrp {proc.pgrp}) {proc.cmdline[:120]}" for proc in procs)


# --- language server sessions ---------------------------------------------------------------------
async def launch(options: dict[str, Any], wait_for: tuple[str, ...] = ("ready", "error"),
                 timeout: float = 60.0) -> GhostClient:
    return await start_session(options, wait_for, timeout)


async def window(clients: list[GhostClient], options: dict[str, Any],
                 wait_for: tuple[str, ...] = ("ready", "error")) -> GhostClient:
    """A language server (an editor window) that the test's `clients` fixture
    (tests/faults/conftest.py) closes after the test."""
    client = await launch(options, wait_for=wait_for)
    clients.append(client)
    return client


async def wait_new_status(client: GhostClient, mark: int, *wanted: str, timeout: float = 30.0) -> dict[str, Any]:
    """The first status in `wanted` that arrived after the first `mark` ones."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for status in client.statuses[mark:]:
            if status["state"] in wanted:
                return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"no status in {wanted} after #{mark} within {timeout} s: {states(client)}")


def everything_seen(client: GhostClient) -> str:
    """All a user (or another user, via ps) could see of the session, for secret checks."""
    return "\n".join([
        json.dumps(client.statuses, default=str),
        "\n".join(message.message for message in client.messages),
        "\n".join(client.logs),
        "".join(client.stderr),
    ])


def states(client: GhostClient) -> list[str]:
    return [status["state"] for status in client.statuses]


# --- the fault report -----------------------------------------------------------------------------
def record(fault: str, survived: bool, recovery_s: float | None = None, left: int = 0, note: str = "") -> None:
    """One row of the fault table (scripts/bench-faults prints them); also printed for `pytest -s`."""
    row = {"fault": fault, "survived": survived, "recovery_s": None if recovery_s is None else round(recovery_s, 2),
           "left": left, "note": note}
    print(f"\nfault: {json.dumps(row)}")
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")


# --- a reference model of the document text (LSP rules, written from the spec) ------------------------
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def lsp_offset(text: str, line: int, character: int) -> int:
    """Code-point offset of an LSP position (UTF-16 columns), clamped like editors do: a line past
    the end is the end of the document, a column past the end of its line is the line's end,
    a column inside a surrogate pair rounds down."""
    starts = [0, *(match.end() for match in _LINE_BREAK.finditer(text))]
    if line >= len(starts):
        return len(text)
    start = starts[line]
    end = starts[line + 1] if line + 1 < len(starts) else len(text)
    content = text[start:end].rstrip("\r\n")
    units = 0
    for index, char in enumerate(content):
        width = 2 if ord(char) > 0xFFFF else 1
        if units + width > character:
            return start + index
        units += width
    return start + len(content)


def lsp_end(text: str) -> tuple[int, int]:
    """The position of the end of the document."""
    lines = _LINE_BREAK.split(text)
    return len(lines) - 1, len(lines[-1].encode("utf-16-le")) // 2


def apply_edit(text: str, start: tuple[int, int], end: tuple[int, int], new: str) -> str:
    """An incremental didChange; a range whose end is before its start inserts at the start."""
    begin = lsp_offset(text, *start)
    finish = max(begin, lsp_offset(text, *end))
    return text[:begin] + new + text[finish:]


def prompt_document(body: dict[str, Any]) -> str:
    """prefix + suffix as a FIM request carries them (chat-fim or raw-fim)."""
    if "messages" in body:
        content = str(body["messages"][-1]["content"])
    else:
        content = str(body["prompt"])
    after = content[content.index("<|fim_prefix|>") + len("<|fim_prefix|>"):]
    prefix, _, rest = after.partition("<|fim_suffix|>")
    suffix = rest[: rest.rindex("<|fim_middle|>")]
    return prefix + suffix


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class TextProbe:
    """Reads the server's text of a document where it leaves the server: a completion at the
    end of the document sends prefix + suffix (the whole text, given a context budget larger
    than the document) to the scripted server, which records it."""

    url: str  # the scripted server's base URL
    sent: set[str] = field(default_factory=set)  # every text a request has carried
    seen: int = 0  # requests the scripted server had received at the last look
    checks: int = 0
    skipped: int = 0
    mismatches: list[tuple[str, str | None]] = field(default_factory=list)  # (expected, the server's)

    async def new_requests(self) -> list[str]:
        """Documents carried by requests that reached the backend since the last call."""
        requests = await received(self.url)
        # External mode's one-token probe for priority and cache_salt carries no document.
        documents = [prompt_document(request["body"]) for request in requests[self.seen:]
                     if "<|fim_prefix|>" in json.dumps(request["body"])]
        self.seen = len(requests)
        self.sent.update(documents)
        return documents

    async def quiesce(self) -> None:
        """Let a cancelled request that was already on its way reach the backend (or not) first."""
        count = -1
        while count != self.seen:
            count = self.seen
            await asyncio.sleep(0.1)
            await self.new_requests()

    async def check(self, client: GhostClient, uri: str, expected: str, tolerate: bool = False) -> str:
        """Ask a completion at the end of the document; the prompt it sends must carry `expected`.
        Returns the server's text. With `tolerate`, a different text is noted in `mismatches`
        (for the caller to carry on from the server's text) instead of failing."""
        await self.new_requests()
        self.checks += 1
        documents: list[str] = []
        # The end first; the start if the cache answered the end (prefix + suffix is the whole text either way).
        for position in (lsp_end(expected), (0, 0)):
            items = await client.complete(uri, *position)
            assert isinstance(items, list)
            documents = await self.new_requests()
            if documents:
                break
        if not documents:
            # Nothing reached the backend: only fine when the cache (keyed on the text around
            # the cursor) answered a text a request already carried, or there is nothing to complete.
            self.skipped += 1
            if not (expected in self.sent or not expected.strip()):
                assert tolerate, f"no request reached the backend for a new text: {expected!r}"
                self.mismatches.append((expected, None))
            return expected
        if documents != [expected]:
            assert tolerate and len(documents) == 1, (documents, expected)
            self.mismatches.append((expected, documents[0]))
        return documents[-1]
