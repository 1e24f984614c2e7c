"""Load: 20 open documents, each edited and asked for completions in concurrent
bursts (some cancelled) for 15 s, against the scripted server answering in a
few streamed chunks. No lost edit (each document's text, read back through the
prompt, equals the reference), no deadlock (every request answers within its
time-out plus a margin, and the server answers a command at the end), memory
stable (the server's RSS over the last third of the run is not above the
first third's by more than a few MB).

15 s, not 30: what the test exercises is interleavings (about 20 x 60 edits and
bursts at once), and on two shared cores the second 15 s adds time, not new
interleavings; the RSS trend is measured after a warm-up over the rest.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from collections.abc import Iterator

import pytest
from lsprotocol import types

from tests.fault_tools import (
    ScriptedProcess,
    TextProbe,
    apply_edit,
    external_scripted_options,
    launch,
    lsp_end,
    record,
    rss_kib,
    script,
)

pytestmark = pytest.mark.faults

DOCUMENTS = 20
DURATION_S = 15.0
TIMEOUT_MS = 3000
REPLY = "\u03a9load_reply()"
PIECES = ["x", "y = 1", " ", "\n", "\r\n", "\t", "é", "😀", "(", ")", "def f():\n    return "]
RSS_GROWTH_LIMIT_KIB = 16 * 1024


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedProcess]:
    server = ScriptedProcess("--served-model-name", "tiny")
    yield server
    server.stop()


def random_edit(rng: random.Random, text: str) -> tuple[tuple[int, int], tuple[int, int], str]:
    """A valid edit (columns within their lines), as an editor sends them."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")

    def position() -> tuple[int, int]:
        line = rng.randrange(1, len(lines)) if len(lines) > 1 else 0  # line 0 is the unique header
        return line, rng.randint(0, len(lines[line].encode("utf-16-le")) // 2)

    start = position()
    end = max(start, position()) if rng.random() < 0.3 else start
    return start, end, rng.choice(PIECES) if rng.random() < 0.8 else ""


async def test_twenty_documents_under_concurrent_bursts(scripted: ScriptedProcess) -> None:
    await script(scripted.url, default={"kind": "ok", "text": REPLY, "chunks": 3, "delay": 0.01})
    options = external_scripted_options(scripted.url, timeoutMs=TIMEOUT_MS, contextTokens=1_000_000,
                                        contextChars=10_000_000)
    client = await launch(options)
    assert client.statuses[-1]["state"] == "ready"
    run = uuid.uuid4().hex[:8]
    reference = {f"file:///tmp/vllm-ghost-load/{run}/doc{i}.py": f"#{run}{i}\nimport os\n\n" for i in range(DOCUMENTS)}
    versions = dict.fromkeys(reference, 1)
    for uri, text in reference.items():
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
    latencies: list[float] = []
    late: list[float] = []
    unexpected: list[str] = []
    counts = {"edits": 0, "requests": 0, "cancelled": 0}
    rss: list[tuple[float, int]] = []
    started = time.monotonic()
    stop_at = started + DURATION_S

    async def timed(uri: str, position: tuple[int, int], cancel: bool) -> None:
        msg_id = f"load-{uuid.uuid4().hex}"
        params = client.completion_params(uri, *position)
        sent = time.monotonic()
        future = client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id)
        counts["requests"] += 1
        if cancel:
            await asyncio.sleep(0.005)
            client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
        try:
            await asyncio.wait_for(future, TIMEOUT_MS / 1000 + 5)
        except TimeoutError:
            late.append(time.monotonic() - sent)  # no answer at all: a deadlock
            return
        except Exception as err:
            if "cancel" in str(err).lower():
                counts["cancelled"] += 1
            else:
                unexpected.append(repr(err))
            return
        latencies.append(time.monotonic() - sent)

    async def typist(index: int, uri: str) -> None:
        rng = random.Random(index)
        while time.monotonic() < stop_at:
            start, end, text = random_edit(rng, reference[uri])
            versions[uri] += 1
            client.text_document_did_change(types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=versions[uri]),
                content_changes=[types.TextDocumentContentChangePartial(
                    range=types.Range(start=types.Position(*start), end=types.Position(*end)), text=text)]))
            reference[uri] = apply_edit(reference[uri], start, end, text)
            counts["edits"] += 1
            # A burst as typing makes them: a few requests at the new end of the text, not awaited one by one.
            burst = [timed(uri, lsp_end(reference[uri]), cancel=rng.random() < 0.3) for _ in range(rng.randint(1, 3))]
            await asyncio.gather(*burst)
            await asyncio.sleep(rng.uniform(0, 0.03))

    async def sampler() -> None:
        while time.monotonic() < stop_at:
            rss.append((time.monotonic() - started, rss_kib(client.pid)))
            await asyncio.sleep(0.5)

    try:
        await asyncio.gather(sampler(), *(typist(i, uri) for i, uri in enumerate(reference)))
        took = time.monotonic() - started
        # No deadlock: the server still answers at once; no lost edit: every text is exact.
        answered = time.monotonic()
        status = await asyncio.wait_for(client.command("vllmGhost.status"), 5)
        command_s = time.monotonic() - answered
        probe = TextProbe(scripted.url)
        await probe.new_requests()  # what the run sent, so far
        for uri, text in reference.items():
            await probe.check(client, uri, text, tolerate=True)
        third = [kib for at, kib in rss if at >= 2.0]  # after a warm-up
        size = max(1, len(third) // 3)
        early, final = statistics.median(third[:size]), statistics.median(third[-size:])
        growth = final - early
        p95 = statistics.quantiles(latencies, n=20)[-1] if len(latencies) >= 20 else max(latencies, default=0)
        survived = not late and not unexpected and growth < RSS_GROWTH_LIMIT_KIB and not probe.mismatches
        record("load: 20 documents, concurrent bursts", survived, None, 0,
               f"{took:.0f} s, {counts['edits']} edits, {counts['requests']} requests "
               f"({counts['cancelled']} cancelled), p95 {p95 * 1000:.0f} ms, RSS {early / 1024:.1f} -> "
               f"{final / 1024:.1f} MiB, {len(probe.mismatches)} documents differ")
        print(f"\nload: {counts} p95 {p95 * 1000:.0f} ms, status in {command_s * 1000:.0f} ms, "
              f"RSS {early} -> {final} KiB")
        assert status["state"] == "ready"
        assert not late, f"{len(late)} requests never answered"
        assert not unexpected, unexpected[:5]
        assert counts["edits"] >= DOCUMENTS * 10 and len(latencies) >= DOCUMENTS * 10, counts
        assert command_s < 2.0
        assert growth < RSS_GROWTH_LIMIT_KIB, f"RSS grew by {growth} KiB: {rss}"
        assert client._server is not None and client._server.returncode is None
        assert not probe.mismatches, f"{len(probe.mismatches)} documents differ: {probe.mismatches[:2]}"
    finally:
        await client.close_session()
