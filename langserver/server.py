"""pygls wiring only: lifecycle, settings, documents, the inlineCompletion handler, commands.

This is the one module that knows LSP types; everything it calls takes plain
text and offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Generator
from typing import Any, Literal

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol, lsp_method
from pygls.uris import to_fs_path

from langserver import __version__
from langserver.backend import fit
from langserver.backend.client import BackendError
from langserver.backend.manager import BackendManager, BackendUnavailable
from langserver.backend.status import Status
from langserver.completion import pipeline
from langserver.completion.postprocess import Completion
from langserver.completion.serving import acceptance
from langserver.completion.serving.service import CompletionService
from langserver.document import Change, TextBuffer
from langserver.settings import Settings, parse_settings, process_settings, redacted
from langserver.workspace import Workspace

STATUS_NOTIFICATION = "vllmGhost/status"
CMD_RESTART_MODEL = "vllmGhost.restartModel"
CMD_STATUS = "vllmGhost.status"
CMD_STOP_MODEL = "vllmGhost.stopModel"
CMD_START_MODEL = "vllmGhost.startModel"
# Each item carries this command (with its id): the editor runs it when the user accepts the item.
CMD_ACCEPTED = "vllmGhost.accepted"
# How often the idle unload looks at the time since the last completion (at most).
IDLE_CHECK_S = 30.0
log = logging.getLogger("vllm-ghost")
# The loggers `log.level` steers: this module's and the pipeline's (named after their modules).
LOGGERS = ("vllm-ghost", "langserver")


class GhostProtocol(LanguageServerProtocol):
    """Documents live only in our TextBuffers. pygls would keep a second copy of each and,
    applying a change, clamp a past-the-end position IN the params object (its codec sets
    character to len-1), so our handler would apply a corrupted range; it also splits
    lines on characters LSP does not (\\f, \\u2028). Skip its copy: params arrive untouched."""

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams) -> Generator[Any, Any, None]:
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_OPEN)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams) -> Generator[Any, Any, None]:
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CHANGE)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams) -> Generator[Any, Any, None]:
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CLOSE)) is not None:
            yield handler, (params,), None


class GhostServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("vllm-ghost", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
                         protocol_cls=GhostProtocol)
        self.settings = Settings()
        self.requested = Settings()  # as the client sent them; `settings` is them fitted to the GPU
        self.fit: fit.Plan | None = None
        # The open documents (their buffers) and cross-file context: the one owner of both.
        self.documents = Workspace()
        self.encoding = "utf-16"
        self.backend = BackendManager(self.publish_status, self.log_line,
                                      on_warning=lambda message: self.show_once(message, types.MessageType.Warning))
        self._progress: str | None = None
        self._backend_task: asyncio.Task[None] | None = None
        self._errors_shown: set[str] = set()
        self.started_at = time.monotonic()
        self._last_status = Status("stopped")
        self._last_status_at = 0.0
        # Why the model is not loaded, when that was a choice: the user stopped it (here or in
        # another window: a completion does not undo that), vllm.autoStart waits for the first
        # completion, or vllm.idleUnloadMinutes let go of it (both load it at the next one).
        self.hold: Literal["user", "lazy", "idle"] | None = None
        self.last_activity = time.monotonic()
        self._idle_task: asyncio.Task[None] | None = None
        # How long after an acceptance its text is looked for (tests shorten the 30 s).
        self.retain_s = float(os.environ.get("VLLM_GHOST_RETAIN_S", acceptance.RETAIN_S))
        self._retain_checks: set[asyncio.Task[None]] = set()
        # Cache, scheduler, warm-up and pipeline: everything between the LSP request and its answer.
        self.completions = CompletionService(self.backend.stream, lambda: self.backend.max_model_len,
                                             self.documents.cross_file, self.documents.forbidden)

    # --- messages to the client -------------------------------------------------------------
    def log_line(self, message: str, kind: types.MessageType = types.MessageType.Log) -> None:
        self.window_log_message(types.LogMessageParams(type=kind, message=message))

    def show_once(self, message: str, kind: types.MessageType = types.MessageType.Error) -> None:
        """One window message per distinct cause; the log gets every occurrence."""
        self.log_line(message, kind)
        if message not in self._errors_shown:
            self._errors_shown.add(message)
            self.window_show_message(types.ShowMessageParams(type=kind, message=f"vLLM Ghost: {message}"))

    def publish_status(self, status: Status) -> None:
        # vLLM prints hundreds of lines while loading (and a download ticks): one such update a
        # second is plenty. A new step of the load (a new start-up phase, the warm-up) always goes out.
        now = time.monotonic()
        tick = "line" in status.detail or "download" in status.detail
        same_phase = status.detail.get("phase") == self._last_status.detail.get("phase")
        if tick and same_phase and status.state == "loading" and self._last_status.state == "loading" \
                and now - self._last_status_at < 1.0:
            return
        self._last_status, self._last_status_at = status, now
        # Progress and message first: a client that acts on the state finds them done.
        self._update_progress(status)
        if status.state == "stopped" and status.detail.get("stoppedBy") == "another window":
            self.hold = "user"
        if status.state == "error":
            self.show_once(status.message)
        elif status.state == "ready":
            self.completions.backend_ready()
            self.log_line(f"backend ready: {status.detail}", types.MessageType.Info)
        self.protocol.notify(STATUS_NOTIFICATION, status.to_wire())

    def _update_progress(self, status: Status) -> None:
        """Work-done progress while the model loads (minutes for a 30B model)."""
        if status.state in ("starting", "loading"):
            if self._progress is None:
                self._progress = f"vllm-ghost-{uuid.uuid4()}"
                with contextlib.suppress(Exception):
                    self.work_done_progress.create(self._progress)
                self.work_done_progress.begin(self._progress, types.WorkDoneProgressBegin(
                    title="vLLM Ghost", message=status.message, cancellable=False))
            else:
                download = status.detail.get("download")
                percent = download.get("percent") if isinstance(download, dict) else None
                self.work_done_progress.report(self._progress, types.WorkDoneProgressReport(
                    message=status.message, percentage=percent if isinstance(percent, int) else None))
        elif self._progress is not None:
            self.work_done_progress.end(self._progress, types.WorkDoneProgressEnd(message=status.message))
            self._progress = None

    # --- settings and backend ---------------------------------------------------------------
    def apply_settings(self, raw: object) -> bool:
        """Merge new settings; True when the backend must restart for them."""
        old = self.settings
        requested, problems = parse_settings(raw, base=Settings())
        for problem in problems:
            self.show_once(problem, types.MessageType.Warning)
        if self.fit is None or requested != self.requested:
            # Fitted once per request: a running vLLM holds the GPU, and re-reading free memory
            # then would pick a smaller model for the same settings.
            self.requested = requested
            self.settings, self.fit = fit.fitted(requested, remember=True)
            self._tell_fit(self.fit)
        self.log_line(f"settings: {redacted(self.settings)}")
        for name in LOGGERS:
            logging.getLogger(name).setLevel(self.settings.log.level.upper())
        if backend_identity(old) != backend_identity(self.settings):
            return True
        self.backend.update(self.settings)
        return False

    def _tell_fit(self, plan: fit.Plan) -> None:
        """Before vLLM starts: which model, whether it fits the card, what to change if not."""
        for note in plan.notes:
            self.log_line(f"fit: {note}", types.MessageType.Info)
        if plan.fits is False:
            self.show_once(plan.message, types.MessageType.Warning)
        elif plan.message:
            self.log_line(f"fit: {plan.message}", types.MessageType.Info)

    def start_backend(self, restart: bool = False) -> None:
        async def run() -> None:
            try:
                if restart:
                    await self.backend.restart(self.settings)
                else:
                    await self.backend.start_model(self.settings)
            except Exception as err:
                log.exception("backend start failed")
                self.publish_status(Status("error", f"backend failed to start: {err}"))

        self.hold = None
        self._backend_task = asyncio.get_running_loop().create_task(run())

    def on_start(self) -> None:
        """After `initialized`: load the model now, or at the first completion (vllm.autoStart)."""
        if self.settings.vllm.auto_start == "startup":
            self.start_backend()
        else:
            self.hold = "lazy"
            self.publish_status(Status("stopped", "the model loads at the first completion (vllm.autoStart)",
                                       {"stoppedBy": "autoStart"}))
        self._idle_task = asyncio.get_running_loop().create_task(self._unload_when_idle())

    def wake_backend(self) -> None:
        """A completion arrived while no model is loaded: load it if it was only waiting for one,
        or join one another window started since; never undo the user's Stop Model otherwise."""
        if self.backend.active() or (self._backend_task is not None and not self._backend_task.done()):
            return
        if self.hold in ("lazy", "idle") or (self.backend.status.state == "stopped" and self.backend.shared_running()):
            self.log_line("loading the model for the first completion" if self.hold == "lazy" else
                          "loading the model again")
            self.start_backend()

    async def stop_model(self) -> None:
        await self.backend.stop_model()
        self.hold = "user"

    async def _unload_when_idle(self) -> None:
        """vllm.idleUnloadMinutes without a completion request: let go of the model (other
        windows may keep the shared vLLM); the next completion loads it again."""
        while True:
            minutes = self.settings.vllm.idle_unload_minutes
            await asyncio.sleep(min(IDLE_CHECK_S, minutes * 15) if minutes > 0 else IDLE_CHECK_S)
            minutes = self.settings.vllm.idle_unload_minutes
            idle_s = time.monotonic() - self.last_activity
            if minutes <= 0 or idle_s < minutes * 60 or not self.backend.active():
                continue
            if self.backend.status.state != "ready" or self.settings.backend.mode != "managed":
                continue
            self.log_line(f"no completion for {idle_s / 60:.1f} min (vllmGhost.vllm.idleUnloadMinutes): "
                          "unloading the model", types.MessageType.Info)
            await self.backend.unload(f"model unloaded after {minutes:g} min without completions; "
                                      "the next completion loads it again")
            self.hold = "idle"

    # --- completion -------------------------------------------------------------------------
    async def complete(self, params: types.InlineCompletionParams) -> types.InlineCompletionList:
        started = time.monotonic()
        empty = types.InlineCompletionList(items=[])
        doc = self.documents.get(params.text_document.uri)
        settings = self.settings
        if doc is None or not settings.completion.enabled:
            return empty
        self.last_activity = started
        self.wake_backend()
        buffer, language = doc.buffer, doc.language
        if language in settings.completion.disabled_languages:
            return empty
        offset = buffer.offset_at(params.position.line, params.position.character)
        request = pipeline.Request(text=buffer.text, offset=offset, language=language)
        explicit = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        try:
            if explicit:
                found = await self.completions.complete_explicit(params.text_document.uri, request, settings, started)
                return types.InlineCompletionList(items=[
                    self._shown_item(params, buffer, language, offset, completion, started, new=index == 0)
                    for index, completion in enumerate(found)])
            completion = await self.completions.complete(params.text_document.uri, request, settings, started)
        except BackendUnavailable:
            return empty
        except TimeoutError:
            self.log_line(f"completion timed out after {settings.completion.timeout_ms} ms "
                          "(vllmGhost.completion.timeoutMs)", types.MessageType.Warning)
            return empty
        except BackendError as err:
            self.show_once(str(err), types.MessageType.Warning)
            return empty
        except Exception:
            # A bug in a pipeline stage must cost one completion, never an error in the editor.
            log.exception("completion failed")
            self.show_once("a completion failed on an internal error; see the log", types.MessageType.Warning)
            return empty
        if completion is None:
            return empty
        return types.InlineCompletionList(items=[self._shown_item(params, buffer, language, offset, completion,
                                                                  started)])

    def _shown_item(self, params: types.InlineCompletionParams, buffer: TextBuffer, language: str, offset: int,
                    completion: Completion, started: float, new: bool = True) -> types.InlineCompletionItem:
        shown = self.completions.acceptance.show(params.text_document.uri, language, completion.text, offset,
                                                 (time.monotonic() - started) * 1000,
                                                 new and not completion.typed_through)
        return self._item(buffer, offset, completion, shown.id)

    def _item(self, buffer: TextBuffer, offset: int, completion: Completion,
              item_id: str) -> types.InlineCompletionItem:
        line, character = buffer.position_at(offset)
        end_line, end_character = buffer.position_at(offset + completion.replace_chars)
        return types.InlineCompletionItem(
            insert_text=completion.text,
            range=types.Range(start=types.Position(line=line, character=character),
                              end=types.Position(line=end_line, character=end_character)),
            # Run by the editor on acceptance: the count stays on this machine (acceptance.py).
            command=types.Command(title="vLLM Ghost: accepted", command=CMD_ACCEPTED, arguments=[item_id]),
        )

    def accepted(self, item_id: str, chars: int | None = None) -> None:
        """The editor accepted an item (`chars` of it, for a partial accept): count it, and
        look for its text again `retain_s` later."""
        shown = self.completions.acceptance.accept(item_id, chars)
        if shown is None:
            return
        kept = len(shown.text) if chars is None else max(0, min(chars, len(shown.text)))

        async def check() -> None:
            await asyncio.sleep(self.retain_s)
            entry = self.documents.get(shown.uri)
            self.completions.acceptance.retained(shown, kept, entry.buffer.text if entry is not None else None)

        task = asyncio.get_running_loop().create_task(check())
        self._retain_checks.add(task)
        task.add_done_callback(self._retain_checks.discard)

    def workspace_folders(self) -> list[str]:
        """The client's workspace folders as paths (rootUri when it named no folders)."""
        uris = [folder.uri for folder in self.workspace.folders.values()] or \
            ([self.workspace.root_uri] if self.workspace.root_uri else [])
        return [path for uri in uris if (path := file_path(uri))]

    def status_object(self) -> dict[str, Any]:
        status = self.backend.status.to_wire()
        status["version"] = __version__
        detail = status.setdefault("detail", {})
        detail.update(self.completions.status_detail())
        # What the last prompt held besides the current file (its tokens as the budget counted them).
        detail["crossFile"] = {"files": list(self.documents.last_files), "tokens": self.documents.last_tokens}
        # Cross-file context reads only inside these: an editor that named none gets none.
        detail["workspaceFolders"] = self.workspace_folders()
        status["settings"] = redacted(self.settings)
        if self.fit is not None:
            status["fit"] = self.fit.to_json()
        return status


def file_path(uri: str) -> str | None:
    """The local path of a file: URI; None for other schemes (untitled, remote)."""
    return to_fs_path(uri) if uri.startswith("file:") else None


def plain_change(change: types.TextDocumentContentChangeEvent) -> Change:
    if isinstance(change, types.TextDocumentContentChangePartial):
        start, end = change.range.start, change.range.end
        return Change(change.text, (start.line, start.character), (end.line, end.character))
    return Change(change.text)


def backend_identity(settings: Settings) -> tuple[object, ...]:
    """What a backend restart is needed for (the prompt format, completion and supervision
    knobs are not)."""
    return (settings.backend, settings.model.path, settings.model.name, process_settings(settings.vllm))


server = GhostServer()


@server.feature(types.INITIALIZE)
def on_initialize(ls: GhostServer, params: types.InitializeParams) -> None:
    # pygls negotiates the encoding before calling us; buffers count in the same units.
    encoding = ls.workspace.position_encoding or "utf-16"
    ls.encoding = str(getattr(encoding, "value", encoding))
    ls.apply_settings(params.initialization_options)
    ls.documents.set_folders(ls.workspace_folders())


@server.feature(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
def on_workspace_folders(ls: GhostServer, params: types.DidChangeWorkspaceFoldersParams) -> None:
    ls.documents.set_folders(ls.workspace_folders())  # pygls has applied the change


@server.feature(types.INITIALIZED)
def on_initialized(ls: GhostServer, params: types.InitializedParams) -> None:
    ls.on_start()


@server.feature(types.SHUTDOWN)
async def on_shutdown(ls: GhostServer, params: None) -> None:
    await ls.backend.stop()


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
def on_configuration(ls: GhostServer, params: types.DidChangeConfigurationParams) -> None:
    if params.settings is None:
        return
    if ls.apply_settings(params.settings) and ls.hold is None:
        ls.start_backend(restart=True)


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def on_open(ls: GhostServer, params: types.DidOpenTextDocumentParams) -> None:
    doc = params.text_document
    ls.documents.open(doc.uri, file_path(doc.uri), doc.text, doc.language_id, ls.encoding)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
def on_change(ls: GhostServer, params: types.DidChangeTextDocumentParams) -> None:
    ls.documents.edit(params.text_document.uri, [plain_change(change) for change in params.content_changes])


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def on_close(ls: GhostServer, params: types.DidCloseTextDocumentParams) -> None:
    ls.documents.close(params.text_document.uri)
    ls.completions.forget(params.text_document.uri)  # its request in flight, if any


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def on_inline_completion(ls: GhostServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
    return await ls.complete(params)


@server.command(CMD_RESTART_MODEL)
async def restart_model(ls: GhostServer, *args: Any) -> dict[str, Any]:
    ls.hold = None
    await ls.backend.restart(ls.settings)
    return ls.status_object()


@server.command(CMD_STOP_MODEL)
async def stop_model(ls: GhostServer, *args: Any) -> dict[str, Any]:
    await ls.stop_model()
    return ls.status_object()


@server.command(CMD_START_MODEL)
async def start_model(ls: GhostServer, *args: Any) -> dict[str, Any]:
    ls.hold = None
    await ls.backend.start_model(ls.settings)
    return ls.status_object()


@server.command(CMD_ACCEPTED)
def accepted(ls: GhostServer, *args: Any) -> dict[str, Any]:
    """Arguments: the item's id, then optionally how many characters were accepted (partial)."""
    item_id = args[0] if args and isinstance(args[0], str) else None
    chars = args[1] if len(args) > 1 and isinstance(args[1], int) else None
    if item_id is not None:
        ls.accepted(item_id, chars)
    return ls.status_object()


@server.command(CMD_STATUS)
def status(ls: GhostServer, *args: Any) -> dict[str, Any]:
    result = ls.status_object()
    if "resetTimings" in args:  # start a new timing window (the typing benchmark, once per policy)
        ls.completions.reset_timings()
    return result
