"""Fuzz (hypothesis): random sequences of didOpen / didChange (valid and invalid
ranges, CRLF and lone CR, astral characters, whole-document changes) /
didClose / inlineCompletion / inlineCompletion-then-$/cancelRequest against a
real language server over stdio. The server must never fail a request, and its
text of every document must always equal a reference model of the edits
(tests/fault_tools.py: LSP's rules, written from the spec).

The server has no "get document text" request, so the text is read where it
leaves the server: a completion at the end of the document sends prefix+suffix
(= the whole text, with a context budget larger than any document here) to the
scripted server, which records it.

Found this way: pygls 2.1 clamped a didChange position past the end of its own
line by writing into the params object (`position.character = _client_len - 1`
in workspace/position_codec.py, with str.splitlines' line rules: form feed and
U+2028 break lines there) before the server's handler applied them; the server
now bypasses pygls' document copy. test_edits_pygls_would_rewrite keeps the cases.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from lsprotocol import types

from bench.lsp import GhostClient
from tests.fault_tools import (
    ScriptedProcess,
    TextProbe,
    apply_edit,
    external_scripted_options,
    launch,
    record,
    script,
)

pytestmark = pytest.mark.faults

DOCS = 3
# A reply no generated edit can type through (the typing-through cache would answer it).
REPLY = "\u03a9vllm_ghost_fuzz_reply"
PIECES = ["a", "b", "x1", " ", "    ", "\t", "\n", "\r\n", "\r", "é", "中", "😀", "𝔘", "\u2028", "\f", "()", "def "]
texts = st.lists(st.sampled_from(PIECES), max_size=12).map("".join)
# Mostly inside small documents, sometimes far outside them.
coordinates = st.one_of(st.integers(0, 6), st.integers(7, 40), st.just(2**31 - 1))


@st.composite
def operations(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    ops: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(1, 16))):
        doc = draw(st.integers(0, DOCS - 1))
        kind = draw(st.sampled_from(["open", "edit", "edit", "edit", "edits", "full", "close", "complete",
                                     "cancel"]))
        if kind == "open":
            ops.append(("open", doc, draw(texts)))
        elif kind == "edit":
            ops.append(("edits", doc, [draw(st.tuples(coordinates, coordinates, coordinates, coordinates, texts))]))
        elif kind == "edits":
            ops.append(("edits", doc, draw(st.lists(st.tuples(coordinates, coordinates, coordinates, coordinates,
                                                               texts), min_size=2, max_size=4))))
        elif kind == "full":
            ops.append(("full", doc, draw(texts)))
        elif kind == "close":
            ops.append(("close", doc))
        else:
            ops.append((kind, doc, draw(coordinates), draw(coordinates)))
    return ops


@dataclass
class Fuzz:
    client: GhostClient
    server: ScriptedProcess
    probe: TextProbe
    examples: int = 0
    versions: dict[str, int] = field(default_factory=dict)


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedProcess]:
    server = ScriptedProcess("--served-model-name", "tiny")
    yield server
    server.stop()


@pytest_asyncio.fixture(scope="module")
async def fuzz(scripted: ScriptedProcess) -> AsyncIterator[Fuzz]:
    await script(scripted.url, default={"kind": "ok", "text": REPLY})
    options = external_scripted_options(scripted.url, timeoutMs=5000, contextTokens=1_000_000,
                                        contextChars=10_000_000)
    client = await launch(options)
    assert client.statuses[-1]["state"] == "ready"
    state = Fuzz(client, scripted, TextProbe(scripted.url))
    yield state
    record("fuzz: didOpen/didChange/complete/cancel", True, None, 0,
           f"{state.examples} sequences, {state.probe.checks} text checks "
           f"({state.probe.skipped} answered without a request)")
    assert client._server is not None and client._server.returncode is None, "the server died during the fuzz"
    assert "Traceback" not in "".join(client.stderr), "".join(client.stderr)[-3000:]
    await client.close_session()


def change(state: Fuzz, uri: str, changes: list[Any]) -> None:
    state.versions[uri] = state.versions.get(uri, 1) + 1
    state.client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=state.versions[uri]),
        content_changes=changes))


async def run(fuzz: Fuzz, ops: list[tuple[Any, ...]]) -> None:
    """Play `ops` on the server and on the reference; check the text after every change."""
    fuzz.examples += 1
    client = fuzz.client
    run_id = uuid.uuid4().hex[:8]
    uris = [f"file:///tmp/vllm-ghost-fuzz/{run_id}/doc{index}.py" for index in range(DOCS)]
    reference: dict[str, str] = {}  # open documents only
    # A first line unique to the run and document: the completion cache, keyed on text, cannot
    # answer a check with another run's text (edits may still change this line).
    headers = [f"#{run_id}{index}\n" for index in range(DOCS)]
    for op in ops:
        uri = uris[op[1]]
        if op[0] == "open":
            text = headers[op[1]] + op[2]
            client.text_document_did_open(types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
            fuzz.versions[uri] = 1
            reference[uri] = text
        elif op[0] == "edits":
            changes = []
            for sl, sc, el, ec, text in op[2]:
                changes.append(types.TextDocumentContentChangePartial(
                    range=types.Range(start=types.Position(sl, sc), end=types.Position(el, ec)), text=text))
                if uri in reference:
                    reference[uri] = apply_edit(reference[uri], (sl, sc), (el, ec), text)
            change(fuzz, uri, changes)
        elif op[0] == "full":
            text = headers[op[1]] + op[2]
            change(fuzz, uri, [types.TextDocumentContentChangeWholeDocument(text=text)])
            if uri in reference:
                reference[uri] = text
        elif op[0] == "close":
            client.text_document_did_close(types.DidCloseTextDocumentParams(
                text_document=types.TextDocumentIdentifier(uri=uri)))
            reference.pop(uri, None)
        elif op[0] == "complete":
            assert isinstance(await client.complete(uri, op[2], op[3]), list)
        elif op[0] == "cancel":
            msg_id = f"fuzz-{uuid.uuid4().hex}"
            future = client.protocol.send_request_async(
                types.TEXT_DOCUMENT_INLINE_COMPLETION, client.completion_params(uri, op[2], op[3]), msg_id=msg_id)
            client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
            try:
                await asyncio.wait_for(future, 10)
            except Exception as err:  # cancelled is the expected answer; nothing else is
                assert "cancel" in str(err).lower(), repr(err)
            await fuzz.probe.quiesce()
        if uri in reference and op[0] in ("open", "edits", "full"):
            await fuzz.probe.check(client, uri, reference[uri])
    for uri in list(reference):
        await fuzz.probe.check(client, uri, reference[uri])
        client.text_document_did_close(types.DidCloseTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri=uri)))
    assert client._server is not None and client._server.returncode is None


# No shrinking: each example is a real LSP round trip, and shrinking one ran past five minutes.
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(ops=operations())
async def test_the_server_survives_and_keeps_every_document_equal_to_the_reference(
        fuzz: Fuzz, ops: list[tuple[Any, ...]]) -> None:
    await run(fuzz, ops)


@pytest.mark.parametrize("ops", [
    [("open", 0, "ab"), ("edits", 0, [(1, 34, 12, 8, "X")])],  # a column past the line end
    [("open", 0, "a\fb\nc"), ("edits", 0, [(1, 3, 1, 3, "X")])],  # a line end after a form feed
    [("open", 0, "x = '\u2028'\ny"), ("edits", 0, [(1, 7, 1, 7, "!")])],  # a line end after U+2028
], ids=["column past line end", "form feed", "U+2028"])
async def test_edits_pygls_would_rewrite(fuzz: Fuzz, ops: list[tuple[Any, ...]]) -> None:
    await run(fuzz, ops)
