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

Within the block, `keep_sure_lines` (`completion.lineConfidence`) ends it
earlier: before the first statement after the first line that the model was
unsure of, by the log probabilities of its tokens (the lines that continue the
first line's own statement, inside its brackets or string, in the bracket the
cursor is in, or in the comment it starts, are judged one by one, each together
with the first line). A small model is often right about the line at the cursor
and wrong about the lines it adds after it; where it is sure of them (a right
block, or a scripted one), the block stays whole. Where the cursor's block goes
on below it (the suffix's next line at or right of the cursor's indentation),
a later line must be surer (goes_on.py).
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Sequence

from langserver.completion.postprocess.dedent import DEDENT_CONFIDENCE, dedents_to_suffix
from langserver.completion.postprocess.goes_on import GOES_ON_CONFIDENCE, block_goes_on
from langserver.completion.postprocess.indent import columns, infer_style, leading
from langserver.completion.postprocess.policy import Policy
from langserver.completion.postprocess.repeats import cut_repetition, runs_into_suffix
from langserver.completion.postprocess.syntax import ScanState, continuation_lines, imbalance, scan, starts_comment
from langserver.completion.stages.confidence import Delta, token_spans
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


def _line_places(raw: str, text: str) -> list[tuple[int, int, int]] | None:
    """(line index in `text`, start, end in `raw`) of each non-blank line of the cleaned
    `text`, found in order with whitespace aside (clean-up may re-indent or drop the typed
    part); None when they cannot be found."""
    places: list[tuple[int, int, int]] = []
    pos = 0
    for index, line in enumerate(text.split("\n")):
        stripped = line.strip()
        if not stripped:
            continue
        at = raw.find(stripped, pos)
        if at < 0:
            return None
        places.append((index, at, at + len(stripped)))
        pos = at + len(stripped)
    return places


@functools.lru_cache(maxsize=64)
def cursor_brackets(context: Context) -> ScanState:
    """The brackets open at the cursor: the whole prefix's (the cursor may sit in a call's
    arguments or a signature's parameters that an earlier line opened), or the cursor line's
    alone when the prefix scan ends inside a string (a prefix cut inside a docstring reads
    its quotes the wrong way round)."""
    state = scan(context.prefix, context.language)
    if state.quote:
        return scan(context.line_prefix, context.language)
    return state


def statement_confidence(parts: Sequence[Delta], text: str, context: Context) -> list[tuple[int, float]] | None:
    """(offset in `text`, probability) of each unit after the first line. A unit is a statement
    (a line outside brackets and strings and the continuation lines after it), except in the
    first line's own statement: there each line is one. A later statement's probability is the
    product of the probabilities of its tokens, from the end of the unit before it (its line
    break and indentation say whether the model wanted another line at all) to the end of its
    last line; a block is never cut inside it.

    A line of the first line's own statement is judged together with the first line: the
    product runs from the start of the answer. That statement is the first line's open bracket
    or string (`def __init__(` then `self,`, `raise Error(`, a docstring), the bracket the
    cursor is in (the next argument or parameter of a list an earlier line opened), or a
    comment the first line starts. Given a wrong first line the model is sure of what comes
    inside it (`self,` after `def __init__(`); the whole of it is as sure as its first line,
    and cutting there shows what `never` shows. None without log probabilities, or when the
    shown lines are not in the raw answer."""
    spans = token_spans(parts)
    if not spans:
        return None
    places = _line_places("".join(part.text for part in parts), text)
    if not places:
        return None
    lines = text.split("\n")
    start = cursor_brackets(context)
    inside = continuation_lines(text, context.language, ScanState(stack=list(start.stack), quote=start.quote))
    comment = starts_comment(context.line_prefix + lines[places[0][0]], context.language)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    # Group the non-blank lines into units:
    # (first line index, raw start, raw end, continues the first line's statement)
    statements: list[tuple[int, int, int, bool]] = []
    in_first = True  # still in the first line's statement: one unit a line
    for index, begin, end in places:
        opens = bool(index) and not inside[index] and not (comment and in_first
                                                              and starts_comment(lines[index], context.language))
        if statements and opens:
            in_first = False
        if not statements or opens or in_first:
            statements.append((index, begin, end, in_first and bool(statements)))
        else:
            statements[-1] = (*statements[-1][:2], end, statements[-1][3])
    result: list[tuple[int, float]] = []
    for previous, (index, _, end, continues) in itertools.pairwise(statements):
        low = 0 if continues else previous[2]
        logprob = sum(lp for s, e, lp in spans if e > low and s < end)
        result.append((offsets[index], math.exp(logprob)))
    return result


def keep_sure_lines(text: str, parts: Sequence[Delta], context: Context, threshold: float) -> str:
    """`text` up to the first unit after the first line whose probability is below `threshold`
    (statement_confidence): whole lines only, never inside a later statement's brackets or
    strings; where the cursor's block goes on below it, below GOES_ON_CONFIDENCE if that is
    higher (goes_on.py); and before a unit that dedents to where the suffix's next line already
    stands, unless its probability is at least DEDENT_CONFIDENCE (dedent.py). Unchanged when
    the threshold is 0, the text is one line, or the answer came without log probabilities."""
    if threshold <= 0 or "\n" not in text:
        return text
    if block_goes_on(context):
        threshold = max(threshold, GOES_ON_CONFIDENCE)
    for offset, probability in statement_confidence(parts, text, context) or ():
        unsure = probability < threshold
        if unsure or (probability < DEDENT_CONFIDENCE and dedents_to_suffix(text[offset:].split("\n", 1)[0], context)):
            return text[:offset].rstrip()
    return text
