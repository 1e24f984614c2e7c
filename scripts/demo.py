"""The demo: a real LSP session over stdio with `python -m langserver`, which starts
vLLM (CPU build) with the tiny test model, then asks for the completion at the
cursor of a sample file and prints it, as ghost text would show it."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.client import LanguageClient

ROOT = Path(__file__).resolve().parent.parent


def options(model: Path) -> dict[str, Any]:
    return {
        "model": {"path": str(model), "name": "tiny"},
        "vllm": {
            "command": [sys.executable, "-m", "vllm.entrypoints.openai.api_server"],
            "args": ["--enforce-eager", "--dtype", "float32", "--max-model-len", "4096"],
            "env": {"VLLM_CPU_KVCACHE_SPACE": "1"},
            "idleGraceS": 0,  # a one-shot run leaves nothing behind (windows keep it 10 s for a reload)
        },
        # The confidence gate's default was chosen on a code model; the tiny model memorised its
        # answers with probabilities far below a trained model's (README, "Confidence gate").
        "completion": {"minConfidence": 0},
    }


async def run(model: Path, file: Path, line: int, character: int, verbose: bool) -> int:
    client = LanguageClient("vllm-ghost-demo", "0")
    ready = asyncio.Event()
    started = time.monotonic()
    state: dict[str, Any] = {}

    @client.feature("vllmGhost/status")
    def on_status(params: Any) -> None:
        state["state"], state["message"] = params.state, params.message
        print(f"[{time.monotonic() - started:5.1f} s] {params.state}: {params.message}", file=sys.stderr)
        if params.state in ("ready", "error"):
            ready.set()

    @client.feature(types.WINDOW_LOG_MESSAGE)
    def on_log(params: types.LogMessageParams) -> None:
        if verbose:
            print(f"  | {params.message}", file=sys.stderr)

    @client.feature(types.PROGRESS)
    def on_progress(params: types.ProgressParams) -> None:
        return None  # the status lines above say the same

    @client.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
    def on_create(params: types.WorkDoneProgressCreateParams) -> None:
        return None

    await client.start_io(sys.executable, "-m", "langserver")
    await client.initialize_async(types.InitializeParams(
        capabilities=types.ClientCapabilities(), initialization_options=options(model)))
    client.initialized(types.InitializedParams())
    await ready.wait()
    code = 1
    if state["state"] == "ready":
        text = file.read_text()
        uri = file.resolve().as_uri()
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
        asked = time.monotonic()
        result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=line, character=character),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
        latency_ms = (time.monotonic() - asked) * 1000
        items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
        lines = text.split("\n")
        print(f"\n{file.relative_to(ROOT)}, cursor at line {line + 1}, column {character + 1}:")
        if items:
            print(f"completion ({latency_ms:.0f} ms): {items[0].insert_text!r}")
            print(f"  {lines[line][:character]}\033[2m{items[0].insert_text}\033[0m{lines[line][character:]}")
            code = 0
        else:
            print("no completion")
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path)
    parser.add_argument("--file", type=Path, default=ROOT / "examples" / "quicksort.py")
    parser.add_argument("--line", type=int, default=4, help="0-based")
    parser.add_argument("--character", type=int, default=4, help="0-based, UTF-16")
    parser.add_argument("--verbose", action="store_true", help="show the server's log (vLLM's output)")
    args = parser.parse_args()
    return asyncio.run(run(args.model, args.file, args.line, args.character, args.verbose))


if __name__ == "__main__":
    sys.exit(main())
