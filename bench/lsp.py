"""A real LSP client over stdio for the end-to-end tests (pygls' LanguageClient).

It records what a user's editor would see: status notifications, messages,
progress, and the server's stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.client import LanguageClient

ROOT = Path(__file__).resolve().parent.parent


class GhostClient(LanguageClient):
    def __init__(self) -> None:
        super().__init__("vllm-ghost-tests", "0")
        self.statuses: list[dict[str, Any]] = []
        self.messages: list[types.ShowMessageParams] = []
        self.logs: list[str] = []
        self.progress: list[Any] = []  # type: ignore[assignment]  # the $/progress values seen (pygls names a handler so)
        self.stderr: list[str] = []
        self._status_event = asyncio.Event()
        self._docs: dict[str, int] = {}
        self._closed = False
        self.initialize_result: types.InitializeResult | None = None  # what open_session got back

        @self.feature("vllmGhost/status")
        def on_status(params: Any) -> None:
            self.statuses.append(_plain(params))
            self._status_event.set()

        @self.feature(types.WINDOW_SHOW_MESSAGE)
        def on_message(params: types.ShowMessageParams) -> None:
            self.messages.append(params)

        @self.feature(types.WINDOW_LOG_MESSAGE)
        def on_log(params: types.LogMessageParams) -> None:
            self.logs.append(params.message)

        @self.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
        def on_progress_create(params: types.WorkDoneProgressCreateParams) -> None:
            return None

        @self.feature(types.PROGRESS)
        def on_progress(params: types.ProgressParams) -> None:
            self.progress.append(_plain(params.value))

    @property
    def pid(self) -> int:
        assert self._server is not None
        return self._server.pid

    async def launch(self, env: dict[str, str] | None = None, argv: list[str] | None = None) -> None:
        """`argv`: the server's command line (default: this Python's `-m langserver`)."""
        command = argv or [sys.executable, "-m", "langserver"]
        await self.start_io(command[0], *command[1:], env={**os.environ, **(env or {})}, cwd=str(ROOT))
        assert self._server is not None and self._server.stderr is not None
        stderr = self._server.stderr

        async def drain() -> None:
            async for line in stderr:
                self.stderr.append(line.decode("utf-8", "replace"))

        self._async_tasks.append(asyncio.create_task(drain()))

    async def open_session(self, options: dict[str, Any], encodings: list[str] | None = None,
                           root: Path = ROOT, folders: list[Path] | None = None) -> types.InitializeResult:
        """`root`: the workspace folder (cross-file context reads only inside it); `folders`:
        several workspace folders instead (the server prefers them to `root`)."""
        general = types.GeneralClientCapabilities(position_encodings=encodings or ["utf-16"])
        result = await self.initialize_async(types.InitializeParams(
            capabilities=types.ClientCapabilities(
                general=general,
                window=types.WindowClientCapabilities(work_done_progress=True),
            ),
            initialization_options=options,
            process_id=os.getpid(),
            root_uri=root.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=folder.as_uri(), name=folder.name)
                               for folder in folders] if folders else None,
        ))
        self.initialized(types.InitializedParams())
        self.initialize_result = result
        return result

    async def wait_status(self, *states: str, timeout: float = 240.0) -> dict[str, Any]:
        """Wait for the next status in `states` (or return the latest one if it already is)."""
        deadline = time.monotonic() + timeout
        seen = len(self.statuses)
        if self.statuses and self.statuses[-1]["state"] in states:
            return self.statuses[-1]
        while time.monotonic() < deadline:
            for status in self.statuses[seen:]:
                if status["state"] in states:
                    return status
            seen = len(self.statuses)
            self._status_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._status_event.wait(), min(1.0, deadline - time.monotonic()))
        raise AssertionError(f"no status in {states} within {timeout} s; saw {[s['state'] for s in self.statuses]}"
                             f"; last: {self.statuses[-1:] }")

    def open(self, text: str, language: str = "python", uri: str | None = None) -> str:
        uri = uri or f"file:///tmp/vllm-ghost-test/{uuid.uuid4().hex}.py"
        self._docs[uri] = 1
        self.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id=language, version=1, text=text)))
        return uri

    def edit(self, uri: str, start: tuple[int, int], end: tuple[int, int], text: str) -> None:
        self._docs[uri] += 1
        self.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=self._docs[uri]),
            content_changes=[types.TextDocumentContentChangePartial(
                range=types.Range(start=types.Position(*start), end=types.Position(*end)), text=text)],
        ))

    def completion_params(self, uri: str, line: int, character: int) -> types.InlineCompletionParams:
        return types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=line, character=character),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
        )

    async def complete(self, uri: str, line: int, character: int) -> list[types.InlineCompletionItem]:
        result = await self.text_document_inline_completion_async(self.completion_params(uri, line, character))
        if result is None:
            return []
        return list(result.items if isinstance(result, types.InlineCompletionList) else result)

    async def command(self, name: str) -> Any:
        return await self.workspace_execute_command_async(types.ExecuteCommandParams(command=name, arguments=[]))

    def vllm_root(self) -> str:
        """The URL of the vLLM the server reports in its latest status (without /v1): its
        /metrics for a benchmark."""
        return str(self.statuses[-1]["detail"]["url"]).removesuffix("/").removesuffix("/v1")

    async def close_session(self, timeout: float = 60.0) -> None:
        """Shutdown, exit, and wait for the process; a second call does nothing (a test may close
        early to look at the exit code, and its fixture closes again)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.shutdown_async(None), timeout)
            self.exit(None)
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait(), timeout)
            except TimeoutError:
                self._server.kill()
        await self.stop()


class NotReady(SystemExit):
    """The server's backend did not become ready: a benchmark stops with its message (exit 1)."""


async def start_session(options: dict[str, Any], wait_for: tuple[str, ...] = ("ready", "error"),
                        timeout: float = 60.0, env: dict[str, str] | None = None,
                        root: Path = ROOT, folders: list[Path] | None = None,
                        require_ready: bool = False, argv: list[str] | None = None) -> GhostClient:
    """A language server over stdio, initialised with `options` (`root` or `folders`: its
    workspace; `argv`: the server's command line, as in GhostClient.launch), once its status is
    one of `wait_for` (empty: at once). `require_ready`: a status other than "ready" closes it and
    raises NotReady. The one way the tests and the benchmarks start one; a server that times out
    is closed before the error goes up."""
    client = GhostClient()
    await client.launch(env, argv)
    try:
        await client.open_session(options, root=root, folders=folders)
        if wait_for:
            status = await client.wait_status(*wait_for, timeout=timeout)
            if require_ready and status["state"] != "ready":
                raise NotReady(f"backend not ready: {status.get('message', status)}")
    except BaseException:
        await client.close_session()
        raise
    return client


def _plain(value: Any) -> Any:
    """Notification params arrive as attribute objects; tests want dicts."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "_asdict"):  # pygls' namedtuple for unknown methods' params
        return _plain(value._asdict())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return {k: _plain(v) for k, v in vars(value).items()}
    return value


def position_of(text: str, offset: int) -> tuple[int, int]:
    """(line, UTF-16 character) of a code-point offset, by LSP's line rules (\\n, \\r\\n, \\r)."""
    before = text[:offset].replace("\r\n", "\n").replace("\r", "\n")
    line = before.count("\n")
    column_text = before.rsplit("\n", 1)[-1]
    return line, len(column_text.encode("utf-16-le")) // 2
