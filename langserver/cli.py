"""Command line: `vllm-ghost lsp` (stdio server, the default), `vllm-ghost complete`,
`vllm-ghost servers` (the shared vLLMs this user runs) and `vllm-ghost doctor` (checks a set-up)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from langserver.backend.manager import BackendManager, BackendUnavailable
from langserver.backend.shared import SharedState, all_states
from langserver.backend.status import Status
from langserver.completion import pipeline
from langserver.completion.serving.service import CompletionService
from langserver.settings import settings_from_args
from langserver.workspace import Workspace


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if args.command in (None, "lsp"):
        from langserver.server import server

        server.start_io()
        return 0
    if args.command == "servers":
        return _servers(stop=args.stop)
    if args.command == "doctor":
        return _doctor(args)
    return asyncio.run(_complete(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vllm-ghost", description=__doc__)
    # LSP clients (vscode-languageclient among them) append --stdio for the stdio transport.
    parser.add_argument("--stdio", action="store_true", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command")
    lsp = sub.add_parser("lsp", help="run the language server over stdio (default)")
    lsp.add_argument("--stdio", action="store_true", help="the only transport; accepted for LSP clients that pass it")
    one = sub.add_parser("complete", help="print one completion for a position in a file")
    one.add_argument("file", type=Path)
    one.add_argument("--line", type=int, required=True, help="1-based line of the cursor")
    one.add_argument("--column", type=int, required=True, help="1-based column of the cursor (characters)")
    _settings_arguments(one)
    one.add_argument("--language", default="", help="languageId (default: from the file extension)")
    servers = sub.add_parser("servers", help="list the shared vLLMs this user runs (one per model and settings)")
    servers.add_argument("--stop", action="store_true",
                         help="stop them all (for vllm.keepAlive, or one a window left behind)")
    doctor = sub.add_parser("doctor", help="check Python, vLLM, GPU, model, port, key file and settings; "
                            "one line each with the fix (exit status 1 when something is broken)")
    _settings_arguments(doctor)
    doctor.add_argument("--gpu-json", action="store_true",
                        help="print only the GPU reading (nvidia-smi) and the model fit decision, as JSON")
    return parser


def _settings_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", help="settings as JSON text or a JSON file (same shape as VS Code's vllmGhost.*)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="one setting by dotted path, e.g. model.path=/models/x (value parsed as JSON if it can)")


_LANGUAGES = {".py": "python", ".js": "javascript", ".ts": "typescript", ".rs": "rust", ".go": "go",
              ".c": "c", ".cpp": "cpp", ".java": "java", ".sh": "shellscript"}


async def _complete(args: argparse.Namespace) -> int:
    settings, problems = settings_from_args(args.settings, args.set)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    text = args.file.read_text(encoding="utf-8")
    lines = text.split("\n")
    if not 1 <= args.line <= len(lines):
        print(f"error: --line must be between 1 and {len(lines)}", file=sys.stderr)
        return 2
    column = min(max(args.column - 1, 0), len(lines[args.line - 1]))
    offset = sum(len(line) + 1 for line in lines[: args.line - 1]) + column

    def on_status(status: Status) -> None:
        print(f"[{status.state}] {status.message}", file=sys.stderr, flush=True)

    # The editor's path with nothing to wait for: the same service (cache, early stop, cross-file
    # context from the folder it runs in, the confidence gate), no debounce.
    settings = dataclasses.replace(settings, completion=dataclasses.replace(settings.completion, debounce_ms=0))
    backend = BackendManager(on_status, lambda line: None)
    await backend.start(settings)
    try:
        if backend.status.state != "ready":
            return 1
        language = args.language or _LANGUAGES.get(args.file.suffix, "")
        uri = args.file.resolve().as_uri()
        workspace = Workspace()
        workspace.set_folders([os.getcwd()])
        workspace.open(uri, str(args.file.resolve()), text, language)
        service = CompletionService(backend.stream, lambda: backend.max_model_len, workspace.cross_file,
                                    workspace.forbidden)
        request = pipeline.Request(text=text, offset=offset, language=language)
        try:
            completion = await service.complete(uri, request, settings)
        except TimeoutError:
            print(f"error: no answer within {settings.completion.timeout_ms} ms (completion.timeoutMs)",
                  file=sys.stderr)
            return 1
        except (BackendUnavailable, RuntimeError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        if completion is not None:
            print(completion.text)
        return 0
    finally:
        await backend.stop()


def _doctor(args: argparse.Namespace) -> int:
    from langserver import doctor

    try:
        settings, problems = settings_from_args(args.settings, args.set)
    except (OSError, ValueError) as err:
        print(f"FAIL  settings  --settings could not be read: {err}")
        return 1
    if args.gpu_json:
        from langserver.backend import fit

        print(json.dumps(fit.report(settings, problems), indent=1), flush=True)
        return 0
    findings = doctor.run(settings, problems)
    print(doctor.render(findings), flush=True)
    return 1 if any(finding.level == "fail" for finding in findings) else 0


def _servers(stop: bool) -> int:
    """The registry (langserver/backend/shared.py), never the keys in it."""
    found = [state for _, state in all_states() if state.keeper.alive()]
    if not found:
        print("no shared vLLM is running")
        return 0
    for state in found:
        print(_describe(state))
    if not stop:
        return 0
    for state in found:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(state.keeper.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while any(state.keeper.alive() for state in found) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [state for state in found if state.keeper.alive()]
    print(f"stopped {len(found) - len(left)} of {len(found)}")
    return 1 if left else 0


def _describe(state: SharedState) -> str:
    age = time.time() - state.started_at
    flags = [f"{len(state.clients)} window(s)", state.phase]
    if state.keep_alive:
        flags.append("keepAlive")
    return (f"{state.model}: http://{state.host}:{state.port}/v1  vLLM pid {state.vllm_pid}, "
            f"keeper pid {state.keeper.pid}, up {age / 60:.0f} min, {', '.join(flags)}")
