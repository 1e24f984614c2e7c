#!/usr/bin/env python3
"""The scripted OpenAI-compatible HTTP server: a stand-in for vLLM used ONLY where
a fault must happen on cue (hangs, 500s, garbage, truncated or slow streams,
a dying engine, a crash loop). Everything else in the tests talks to real vLLM.

It speaks just enough of vLLM's HTTP surface for the language server: /health,
/v1/models, /tokenize, streaming /v1/chat/completions and /v1/completions, with
the same key rule (VLLM_API_KEY from the environment guards /v1/*). It takes
vLLM's command-line flags, so it can also run as the *managed* "vLLM"
(`vllm.command = [python, tests/scripted_server.py]`), and ignores the ones it
does not know.

HTTP/1.1 is written by hand on asyncio streams so that a fault can be exactly
what it says (a chunked body cut mid-way, a connection that never answers).

Test control (no key needed; this is a test double):
    POST /_script  {"health": 503, "faults": [{"kind": "hang"}, ...], "default": {...}, "clear": true}
                   faults are used one per completion request, then `default`
    GET  /_requests     every completion request received: path, body, outcome
    GET  /_info         pid, host, port, argv and the key it was given (to prove where keys go)

Fault kinds: ok {text, chunks, delay}, hang, status {status, body}, garbage,
truncated, exit {code} (the process dies mid-request).

Run: python tests/scripted_server.py --host 127.0.0.1 --port 0 [--served-model-name NAME]
     [--exit-after S] [--startup-delay S] [--exit-code C]
It prints `scripted-server listening on PORT` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any

QWEN_TOKEN_IDS = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|fim_prefix|>": 151659,
    "<|fim_middle|>": 151660, "<|fim_suffix|>": 151661, "<|fim_pad|>": 151662, "<|repo_name|>": 151663,
    "<|file_sep|>": 151664,
}
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 500: "Internal Server Error",
           503: "Service Unavailable"}


class ScriptedServer:
    def __init__(self, model_name: str = "tiny", max_model_len: int = 1_000_000, key: str = "",
                 argv: list[str] | None = None) -> None:
        self.model_name = model_name
        self.max_model_len = max_model_len
        self.key = key
        self.argv = argv or []
        self.health = 200
        self.faults: list[dict[str, Any]] = []
        self.default: dict[str, Any] = {"kind": "ok", "text": "0"}
        self.requests: list[dict[str, Any]] = []
        self.host = ""
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._connection, host, port, limit=1 << 26)
        self.host = host
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def serve_forever(self) -> None:
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    # --- HTTP plumbing -------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                method, target, _ = request_line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                keep_alive = await self._route(method, target.split("?", 1)[0], headers, body, reader, writer)
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, status: int, payload: Any, content_type: str = "application/json"
                    ) -> bool:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(data)}\r\nConnection: keep-alive\r\n\r\n")
        writer.write(head.encode() + data)
        await writer.drain()
        return True

    async def _route(self, method: str, path: str, headers: dict[str, str], body: bytes,
                     reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if path == "/health":
            return await self._send(writer, self.health, b"", "text/plain")
        if path == "/_script" and method == "POST":
            self._apply_script(json.loads(body or b"{}"))
            return await self._send(writer, 200, {"ok": True})
        if path == "/_requests":
            return await self._send(writer, 200, self.requests)
        if path == "/_info":
            return await self._send(writer, 200, {"pid": os.getpid(), "host": self.host, "port": self.port,
                                                  "argv": self.argv, "key": self.key})
        if path == "/tokenize" and method == "POST":
            prompt = json.loads(body or b"{}").get("prompt", "")
            tokens = [QWEN_TOKEN_IDS[prompt]] if prompt in QWEN_TOKEN_IDS else [1, 2]
            return await self._send(writer, 200, {"tokens": tokens, "count": len(tokens)})
        if path.startswith("/v1/") and self.key and headers.get("authorization") != f"Bearer {self.key}":
            return await self._send(writer, 401, {"error": {"message": "Unauthorized", "type": "auth"}})
        if path == "/v1/models":
            model = {"id": self.model_name, "object": "model", "owned_by": "scripted",
                     "max_model_len": self.max_model_len}
            return await self._send(writer, 200, {"object": "list", "data": [model]})
        if path in ("/v1/chat/completions", "/v1/completions") and method == "POST":
            return await self._completion(path, json.loads(body), reader, writer)
        return await self._send(writer, 404, {"error": {"message": f"no route {method} {path}"}})

    def _apply_script(self, script: dict[str, Any]) -> None:
        if script.get("clear"):
            self.faults.clear()
            self.requests.clear()
        if "health" in script:
            self.health = int(script["health"])
        if "default" in script:
            self.default = dict(script["default"])
        self.faults.extend(script.get("faults", []))

    # --- completions and their faults ------------------------------------------------------------
    async def _completion(self, path: str, body: dict[str, Any], reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> bool:
        fault = self.faults.pop(0) if self.faults else self.default
        record: dict[str, Any] = {"path": path, "body": body, "kind": fault.get("kind", "ok"), "at": time.time(),
                                  "outcome": "started"}
        self.requests.append(record)
        kind = record["kind"]
        if kind == "exit":
            os._exit(int(fault.get("code", 1)))
        if kind == "hang":
            # Accept and never answer; notice when the client gives up.
            with contextlib.suppress(ConnectionError):
                while await reader.read(65536):
                    pass
            record["outcome"] = "client closed"
            return False
        if kind == "status":
            record["outcome"] = "answered"
            status = int(fault.get("status", 500))
            return await self._send(writer, status, {"error": {"message": fault.get("body", "scripted failure"),
                                                               "type": "scripted", "code": status}})
        chat = path.endswith("chat/completions")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
                     b"Connection: keep-alive\r\n\r\n")
        if kind == "garbage":
            await self._chunk(writer, b"data: {\"choices\": [{\"delta\": {\"content\": \"x\"\n\ndata: }}}garbage\n\n")
            await self._chunk(writer, b"data: [DONE]\n\n")
            await self._chunk(writer, b"")
            record["outcome"] = "answered"
            return True
        text = str(fault.get("text", "0"))
        pieces = max(1, int(fault.get("chunks", 1)))
        delay = float(fault.get("delay", 0.0))
        size = max(1, -(-len(text) // pieces))
        parts = [text[i:i + size] for i in range(0, len(text), size)] or [""]
        try:
            for index, part in enumerate(parts):
                if delay:
                    await asyncio.sleep(delay)
                await self._chunk(writer, self._event(chat, part, None))
                if kind == "truncated" and index == 0:
                    # Cut the chunked body mid-way: no terminating chunk, no [DONE].
                    writer.write(b"40\r\ndata: {\"choi")
                    await writer.drain()
                    record["outcome"] = "truncated"
                    return False
            await self._chunk(writer, self._event(chat, "", "stop"))
            await self._chunk(writer, b"data: [DONE]\n\n")
            await self._chunk(writer, b"")
        except ConnectionError:
            record["outcome"] = "client closed"
            return False
        record["outcome"] = "answered"
        return True

    @staticmethod
    async def _chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()

    def _event(self, chat: bool, text: str, finish: str | None) -> bytes:
        if chat:
            choice: dict[str, Any] = {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
            obj = "text_completion"
        event = {"id": "scripted-1", "object": obj, "created": int(time.time()), "model": self.model_name,
                 "choices": [choice]}
        return b"data: " + json.dumps(event).encode() + b"\n\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="scripted OpenAI-compatible server (test double for faults)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", default="scripted")
    parser.add_argument("--served-model-name", default="")
    parser.add_argument("--max-model-len", type=int, default=1_000_000)
    parser.add_argument("--startup-delay", type=float, default=0.0, help="seconds 'loading' before listening")
    parser.add_argument("--exit-after", type=float, default=0.0, help="exit this long after listening (crash)")
    parser.add_argument("--exit-code", type=int, default=1)
    return parser


async def _main(args: argparse.Namespace, argv: list[str]) -> None:
    server = ScriptedServer(args.served_model_name or args.model, args.max_model_len,
                            os.environ.get("VLLM_API_KEY", ""), argv)
    if args.startup_delay:
        print("scripted-server: loading", flush=True)
        await asyncio.sleep(args.startup_delay)
    port = await server.start(args.host, args.port)
    print(f"scripted-server listening on {port}", flush=True)
    if args.exit_after:
        loop = asyncio.get_running_loop()
        loop.call_later(args.exit_after, lambda: os._exit(args.exit_code))
    await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args, _unknown = _parser().parse_known_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args, argv))


if __name__ == "__main__":
    main()
