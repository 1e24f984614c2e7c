"""Multi-line policy: how much of the answer to show, and whether it replaces the rest of the line.

`completion.multiline`:
- never:  one line. At the end of a non-empty line the model may open the next
          line ("\\n" + one line), which is still one line of new text.
- auto:   with text right of the cursor, one line; at the end of a line (only
          whitespace right of it), several lines up to the end of the block.
- always: several lines up to the end of the block, even mid-line.

The block is the enclosing definition: the completion ends at the first line
(outside brackets and strings) indented at or left of the outermost function
or method around the cursor. That stops a model that finished the function and
goes on to write the next one, yet keeps an answer that closes inner blocks
(`if`, `for`, nested helpers) on its way, as a fill-in-the-middle answer often
must. At top level, a new definition after a blank line ends the completion.

`is_complete` answers the streaming layer's question "can generation stop
now?" with the same rules, so a stream is cut exactly where the clean-up
would cut it anyway.
"""

from __future__ import annotations

import functools
import re

from langserver.completion.postprocess.indent import columns, infer_style, leading
from langserver.completion.postprocess.policy import Policy
from langserver.completion.postprocess.repeats import cut_repetition, runs_into_suffix
from langserver.completion.postprocess.syntax import continuation_lines, imbalance, scan
from langserver.completion.stages.context import Context

_DEFINITION = re.compile(
    r"^[ \t]*(?:(?:export|default|pub(?:\([^)]*\))?|async|static|public|private|protected|internal|abstract"
    r"|final|override|suspend|inline|unsafe|extern|const)\s+)*"
    r"(def|fn|func|function|fun|sub|class|interface|struct|impl|trait|enum|module|object)\b"
)
_CLASS_LIKE = {"class", "interface", "struct", "impl", "trait", "enum", "module", "object"}
_CLOSER_LINE = re.compile(r"^[ \t]*([)\]}]+[;,)]*|end)[ \t]*$")


def allows_multiline(context: Context, policy: Policy) -> bool:
    if policy.multiline == "never":
        return False
    if policy.multiline == "always":
        return True
    return not context.line_suffix.strip()


def single_line(text: str, context: Context) -> str:
    """The first line of new text. At the end of a non-empty line an answer may start on
    the next line; mid-line or on a blank line a leading line break means nothing useful."""
    body = text.lstrip("\r\n")
    lead = ""
    if len(body) < len(text):
        if not (context.line_prefix.strip() and not context.line_suffix.strip()):
            return ""
        lead = "\r\n" if text.startswith("\r\n") else "\n"
    line = body.split("\n", 1)[0]
    return lead + (line[:-1] if line.endswith("\r") else line)


@functools.lru_cache(maxsize=64)
def block_floor(context: Context) -> int:
    """Columns a completion line must exceed to stay in the block (0 = top level).

    Walks up from the cursor line through the lines that enclose it (each less
    indented than the last) and takes the outermost function; for code in a class
    it is the method, not the class."""
    style = infer_style(context)
    cursor_line = context.line_prefix
    depth = columns(leading(cursor_line), style.width) if cursor_line.strip() else columns(cursor_line, style.width)
    chain: list[tuple[int, str]] = []  # (depth, keyword or "") innermost first
    if cursor_line.strip():
        chain.append((depth, _definition_keyword(cursor_line)))
    lines = context.prefix.split("\n")[:-1]
    for line in reversed(lines):
        if not line.strip() or line.lstrip().startswith(("#", "//", "*", "/*")):
            continue
        line_depth = columns(leading(line), style.width)
        if line_depth < depth or (not chain and line_depth <= depth and _definition_keyword(line)):
            chain.append((line_depth, _definition_keyword(line)))
            depth = line_depth
            if depth == 0:
                break
    for line_depth, keyword in reversed(chain):  # outermost first
        if keyword and keyword not in _CLASS_LIKE:
            return line_depth + 1
    classes = [line_depth for line_depth, keyword in chain if keyword in _CLASS_LIKE]
    return classes[0] + 1 if classes else 0


def _definition_keyword(line: str) -> str:
    match = _DEFINITION.match(line)
    return match.group(1) if match else ""


def block_end(text: str, context: Context) -> int | None:
    """Where the block ends in `text` (an offset at a line start), or None if it does not.

    Lines starting inside brackets or strings do not count; a closing-bracket line
    at the floor is kept (it closes the block) and ends it."""
    floor = block_floor(context)
    style = infer_style(context)
    lines = text.split("\n")
    inside = continuation_lines(text, context.language, scan(context.line_prefix, context.language))
    offset = len(lines[0]) + 1
    seen_content = bool(lines[0].strip())
    previous_blank = False
    for index in range(1, len(lines)):
        line = lines[index]
        if not line.strip() or inside[index]:
            previous_blank = not line.strip()
            offset += len(line) + 1
            continue
        depth = columns(leading(line), style.width)
        if floor and depth < floor:
            if _CLOSER_LINE.match(line):
                return min(len(text), offset + len(line) + 1)
            return offset
        if not floor and seen_content and depth == 0 and previous_blank and _definition_keyword(line):
            return offset
        seen_content = True
        previous_blank = False
        offset += len(line) + 1
    return None


def limit_lines(text: str, context: Context, policy: Policy) -> str:
    """The clean-up step: one line, or lines up to the end of the block."""
    if not allows_multiline(context, policy):
        return single_line(text, context)
    end = block_end(text, context)
    if end is None:
        return text
    return text[:end].rstrip()


def replace_chars(text: str, context: Context) -> int:
    """How much of the rest of the line the completion replaces: all of it when the
    completion already closes what the rest of the line would close (the model
    rewrote `)` as `) -> int:`), else nothing (the completion goes before it)."""
    rest = context.line_suffix
    if "\n" in text or not rest.strip():
        return 0
    line = context.line_prefix + text
    if imbalance(line, context.language) < imbalance(line + rest, context.language):
        return len(rest)
    return 0


def is_complete(text: str, context: Context, policy: Policy) -> bool:
    """Can a stream stop here? True once the policy would cut the text anyway: a full
    line in single-line mode, the end of the block, a run into the text after the
    cursor or a repetition loop in multi-line mode."""
    if not allows_multiline(context, policy):
        # At the end of a line, leading line breaks open the next line (or are dropped).
        body = text if context.line_suffix.strip() else text.lstrip("\r\n")
        return "\n" in body
    complete_lines = text[: text.rfind("\n") + 1]
    if not complete_lines.strip():
        return False
    if block_end(complete_lines, context) is not None:
        return True
    return runs_into_suffix(complete_lines, context) or cut_repetition(complete_lines) != complete_lines
