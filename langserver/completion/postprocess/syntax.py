"""Syntax checks for the clean-up: bracket balance (any language) and parsing.

Two levels, so every language gets something:
- `scan` walks brackets and string literals with a small state machine that
  knows the usual quote and comment forms; it answers "is this line balanced?"
  and "does this line start inside brackets or a string?" for any language.
- `parse_error` really parses: Python with `ast` (always there), other
  languages with tree-sitter when its Python binding and the language's grammar
  package are installed (`tree_sitter_<lang>`); without them it answers None and
  the trimming that uses it does nothing.

`trim_to_parsing` is the syntax-aware clean-up step: among the line ends of the
completion it keeps the longest one for which prefix + completion + suffix
parses no worse than prefix + suffix alone.
"""

from __future__ import annotations

import ast
import functools
import importlib
import re
import warnings
from dataclasses import dataclass
from typing import Any

from langserver.completion.postprocess.policy import Policy
from langserver.completion.stages.context import Context

OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {v: k for k, v in OPENERS.items()}
_HASH_COMMENT = {"python", "ruby", "shellscript", "shell", "bash", "sh", "perl", "r", "yaml", "toml",
                 "makefile", "dockerfile", "elixir", "julia", "nim", "coffeescript", "powershell"}
_TRIPLE_QUOTES = {"python", "julia", "kotlin", "scala", "swift", "groovy", "toml", ""}


@dataclass
class ScanState:
    """Where a scan stands: open brackets (innermost last) and an open string's quote."""

    stack: list[str]
    quote: str = ""  # ', ", `, ''' or """ while inside a string literal
    unmatched_closers: int = 0


def scan(text: str, language: str = "", state: ScanState | None = None) -> ScanState:
    """Track brackets outside strings and comments through `text`."""
    state = state or ScanState(stack=[])
    hash_comments = language in _HASH_COMMENT or not language
    slash_comments = language not in _HASH_COMMENT
    triple = language in _TRIPLE_QUOTES
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if state.quote:
            if ch == "\\":
                i += 2
                continue
            if text.startswith(state.quote, i):
                i += len(state.quote)
                state.quote = ""
                continue
            if ch == "\n" and len(state.quote) == 1 and state.quote != "`":
                state.quote = ""  # an unterminated one-line string ends with its line
            i += 1
            continue
        if (hash_comments and ch == "#") or (slash_comments and text.startswith("//", i)):
            end = text.find("\n", i)
            i = n if end == -1 else end
            continue
        if slash_comments and text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end == -1 else end + 2
            continue
        if ch in "\"'`":
            if triple and text.startswith(ch * 3, i):
                state.quote = ch * 3
                i += 3
                continue
            if ch == "'" and not _is_quote_start(text, i, language):
                i += 1
                continue
            state.quote = ch
        elif ch in OPENERS:
            state.stack.append(ch)
        elif ch in CLOSERS:
            if state.stack and state.stack[-1] == CLOSERS[ch]:
                state.stack.pop()
            else:
                state.unmatched_closers += 1
        i += 1
    return state


def _is_quote_start(text: str, index: int, language: str) -> bool:
    """A ' is a lifetime or a possessive in prose-like places of some languages, not a quote."""
    if language == "rust":
        return False  # 'a lifetimes; char literals are short and rarely span brackets
    return True


def starts_comment(line: str, language: str = "") -> bool:
    """Does the line (indentation aside) start with a line comment of the language?"""
    stripped = line.lstrip()
    if language in _HASH_COMMENT or not language:
        return stripped.startswith("#")
    return stripped.startswith("//")


def imbalance(text: str, language: str = "") -> int:
    """How far the text is from balanced: unmatched closers + open brackets + an open string."""
    state = scan(text, language)
    return state.unmatched_closers + len(state.stack) + (1 if state.quote else 0)


def continuation_lines(text: str, language: str = "", start: ScanState | None = None,
                       strings_only: bool = False) -> list[bool]:
    """For each line of `text`: does it start inside brackets or a multi-line string
    (only a string, with `strings_only`)?"""
    state = start or ScanState(stack=[])
    result: list[bool] = []
    for line in text.split("\n"):
        result.append((bool(state.stack) and not strings_only) or bool(state.quote))
        state = scan(line + "\n", language, state)
    return result


# --- parsing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ParseError:
    offset: int  # code points into the parsed source
    message: str


# Tree-sitter grammar packages by LSP language id (the module is tree_sitter_<name>).
_GRAMMARS = {
    "javascript": ("tree_sitter_javascript", "language"),
    "javascriptreact": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "typescriptreact": ("tree_sitter_typescript", "language_tsx"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "java": ("tree_sitter_java", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
}


def has_parser(language: str) -> bool:
    return language == "python" or _tree_sitter_parser(language) is not None


@functools.lru_cache(maxsize=512)
def parse_error(source: str, language: str) -> ParseError | None:
    """The first syntax error of `source`, None when it parses (or no parser exists)."""
    if language == "python":
        return _python_error(source)
    parser = _tree_sitter_parser(language)
    if parser is None:
        return None
    tree = parser.parse(source.encode("utf-8"))
    node = _first_error(tree.root_node)
    if node is None:
        return None
    byte_offset: int = node.start_byte
    return ParseError(len(source.encode("utf-8")[:byte_offset].decode("utf-8", "replace")), node.type)


def _python_error(source: str) -> ParseError | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences and the like
            ast.parse(source)
    except SyntaxError as err:
        return ParseError(_offset_of(source, err.lineno or 1, err.offset or 1), err.msg)
    except (ValueError, RecursionError, MemoryError) as err:  # null bytes, absurd nesting
        return ParseError(0, str(err))
    return None


def _offset_of(source: str, lineno: int, col: int) -> int:
    """Code-point offset of a 1-based (line, column) from a SyntaxError."""
    offset = 0
    for _ in range(lineno - 1):
        newline = source.find("\n", offset)
        if newline == -1:
            return len(source)
        offset = newline + 1
    return min(len(source), offset + max(0, col - 1))


@functools.lru_cache(maxsize=16)
def _tree_sitter_parser(language: str) -> Any:
    spec = _GRAMMARS.get(language)
    if spec is None:
        return None
    try:
        tree_sitter = importlib.import_module("tree_sitter")
        grammar = importlib.import_module(spec[0])
        return tree_sitter.Parser(tree_sitter.Language(getattr(grammar, spec[1])()))
    except Exception:  # binding or grammar missing or incompatible: no parsing for it
        return None


def _first_error(node: Any) -> Any:
    if not node.has_error:
        return None
    if node.type == "ERROR" or node.is_missing:
        return node
    for child in node.children:
        found = _first_error(child)
        if found is not None:
            return found
    return node


# --- the clean-up step -------------------------------------------------------------------

_TOP_LEVEL = re.compile(r"[^\s#)\]}]")


def parse_region(context: Context) -> tuple[str, str]:
    """Prefix and suffix cut to the top-level statement around the cursor, so that an
    unrelated error elsewhere in the window does not blur the comparison (and the parse
    stays small in a big file)."""
    prefix, suffix = context.prefix, context.suffix
    start = 0
    for match in re.finditer(r"\n(?=[^\s#)\]}])", prefix):
        start = match.end()
    # Decorators and comments directly above the statement belong to it.
    while start > 0:
        previous = prefix.rfind("\n", 0, start - 1) + 1
        line = prefix[previous:start].strip()
        if not (line.startswith("@") or line.startswith("#")):
            break
        start = previous
    end = len(suffix)
    first_newline = suffix.find("\n")
    if first_newline != -1:
        for match in re.finditer(r"\n(?=[^\s#)\]}])", suffix[first_newline:]):
            line = suffix[first_newline + match.end():].split("\n", 1)[0]
            if not re.match(r"(else|elif|except|finally)\b", line):
                end = first_newline + match.start() + 1
                break
    return prefix[start:], suffix[:end]


def no_worse(prefix: str, middle: str, suffix: str, language: str) -> bool:
    """Does prefix + middle + suffix parse no worse than prefix + suffix alone?

    "No worse" = it parses, or it fails with the very same first error as without
    the middle (same message, same place in the prefix or the suffix). An error
    that moved is not accepted: an unclosed bracket in the middle can push the
    error far into the suffix."""
    error = parse_error(prefix + middle + suffix, language)
    if error is None:
        return True
    baseline = parse_error(prefix + suffix, language)
    if baseline is None or baseline.message != error.message:
        return False
    if baseline.offset < len(prefix):
        return error.offset == baseline.offset
    return error.offset - len(middle) == baseline.offset and error.offset >= len(prefix) + len(middle)


def trim_to_parsing(text: str, context: Context, policy: Policy | None = None) -> str:
    """Keep the longest line-end cut of a multi-line completion that parses no worse
    than the code without it; unchanged when there is no parser or no cut qualifies."""
    if "\n" not in text.strip() or not has_parser(context.language):
        return text
    prefix, suffix = parse_region(context)
    cuts = [len(text)] + [i for i in range(len(text) - 1, 0, -1) if text[i] == "\n" and text[:i].strip()]
    for cut in cuts:
        if no_worse(prefix, text[:cut], suffix, context.language):
            return text[:cut]
    return text
