"""The workspace: the one owner of the open documents (their buffers), recent edits, files
on disk, and the cross-file block.

server.py feeds it plain data (folder paths, documents with their language, each edit as a
document.Change) and reads the buffers back to answer a request; the completion service asks
it (through the callables the server hands over) for the block of other files' code that
goes ahead of the current file in Qwen's repository layout.

Sources (`completion.crossFile.sources`):
- "open": the other open documents, same language first;
- "edits": the lines around recent edits of other open documents;
- "imports": the files the current file imports that lie in the workspace (imports.py).
Every file obeys safety.py's rules, open documents included.

The block is built for vLLM's prefix cache: it leads the prompt, so while it holds
still every keystroke reuses its KV blocks. It is only reconsidered when something
outside the current document changed, the cursor moved far, or every
RECHECK_EDITS edits of the current document (its imports may have changed). Then the
snippets already in it stay, in their order, as long as their text is still what the
file holds; new ones are appended while the budget allows. Only when a snippet went
stale (its file changed or left), the budget no longer fits, or the cursor moved far,
is the block rebuilt: ranked, deterministic (ties by path), no clock or counter in it.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from langserver.completion.stages.context import RepoContext
from langserver.completion.stages.tokens import TokenCounter
from langserver.document import Change, TextBuffer
from langserver.workspace import imports, snippets
from langserver.workspace.safety import Folder, Guard, is_secret_name, text_problem

log = logging.getLogger("vllm-ghost")

SOURCES = ("open", "edits", "imports")
# Windows per file and snippets per block (Copilot: 4 snippets, one a file).
PER_FILE = 2
MAX_SNIPPETS = 8
# Open documents looked at (the most recently opened first).
MAX_OPEN = 20
# Recent edits remembered (Copilot keeps 8 volatile ones).
MAX_EDITS = 8
# The cursor this many lines away from where the block was ranked: rank again.
FAR_LINES = 2 * snippets.WINDOW_LINES
# Reconsider after this many edits of the current document (about a line of typing).
RECHECK_EDITS = 64
# Added to the similarity of a window that defines a name the current file imports (Continue's
# "import definitions"): the definition is what a completion that uses the name needs to see.
DEFINES_BONUS = 1.0
# Below this many tokens a block is not worth its headers.
MIN_BUDGET = 64


@dataclass
class Document:
    """An open document: its buffer (LSP's lines and positions) and what cross-file context
    keeps of it."""

    path: Path | None  # None: not a file (untitled, another scheme)
    buffer: TextBuffer
    language: str
    opened: int  # open order, for a deterministic "most recent first"
    version: int = 0
    location: tuple[Folder, str] | None = None  # folder and relative path, when inside one
    key: str = ""  # the resolved path
    secret_name: bool = False
    _lines: tuple[int, list[str], list[snippets.Window]] | None = None  # (version, lines, windows)
    _admitted: tuple[int, bool] | None = None

    @property
    def text(self) -> str:
        return self.buffer.text

    def lines_and_windows(self) -> tuple[list[str], list[snippets.Window]]:
        if self._lines is None or self._lines[0] != self.version:
            lines = snippets.split_lines(self.text)
            self._lines = (self.version, lines, snippets.windows(lines))
        return self._lines[1], self._lines[2]

    def admitted(self, guard: Guard) -> bool:
        if self._admitted is None or self._admitted[0] != self.version:
            ok = self.path is not None and self.location is not None and guard.admits(self.path, self.text)
            self._admitted = (self.version, ok)
        return self._admitted[1]


@dataclass(frozen=True)
class Edit:
    uri: str
    first: int
    last: int


@dataclass(frozen=True)
class Source:
    """A file the block may take windows from."""
    key: str  # resolved path
    path: str  # relative to the folder, as the prompt shows it
    lines: list[str]
    windows: list[snippets.Window]
    same_language: bool
    edits: tuple[snippets.Window, ...] = ()  # windows around recent edits (the "edits" source)


@dataclass(frozen=True)
class Snippet:
    key: str
    path: str
    start: int
    end: int
    text: str
    tokens: int


@dataclass
class Block:
    shape: tuple[object, ...]  # budget, sources, folder: another shape, another block
    snippets: list[Snippet]
    anchor: int  # cursor offset it was ranked for
    seen: int  # changes elsewhere when last considered
    own: int  # the current document's version when last considered
    repo: RepoContext | None = None


@dataclass
class _DiskFile:
    stamp: tuple[int, int]  # mtime_ns, size
    lines: list[str] | None
    windows: list[snippets.Window] = field(default_factory=list)


class Workspace:
    def __init__(self) -> None:
        self.guard = Guard()
        self.documents: dict[str, Document] = {}
        self.edits: deque[Edit] = deque(maxlen=MAX_EDITS)
        self._blocks: dict[str, Block] = {}
        self._disk: dict[Path, _DiskFile] = {}
        self._changes = 0  # every change of a document, folder or open set
        self._opened = 0
        self.last_files: tuple[str, ...] = ()  # the files in the last block handed out
        self.last_tokens = 0

    # --- what the server feeds ---------------------------------------------------------------
    def set_folders(self, paths: list[str]) -> None:
        self.guard.set_folders(paths)
        for doc in self.documents.values():
            doc.location = self._locate(doc.path)
            doc._admitted = None
        self._disk.clear()
        self._blocks.clear()
        self._changes += 1

    def open(self, uri: str, path: str | None, text: str, language: str, encoding: str = "utf-16") -> None:
        """A document opened in the editor; `encoding`: the units of its positions."""
        self._opened += 1
        file = Path(path) if path else None
        self.documents[uri] = Document(file, TextBuffer(text, encoding), language, self._opened,
                                       location=self._locate(file), key=_resolved(file) if file is not None else "",
                                       secret_name=file is not None and is_secret_name(file))
        self._changes += 1

    def get(self, uri: str) -> Document | None:
        return self.documents.get(uri)

    def edit(self, uri: str, changes: Iterable[Change]) -> None:
        """The editor's edits of an open document, in order (didChange)."""
        doc = self.documents.get(uri)
        if doc is None:
            return
        for change in changes:
            if change.start is None or change.end is None:
                doc.buffer.set_text(change.text)
                self._changed(uri, doc)
            else:
                doc.buffer.replace(change.start, change.end, change.text)
                self._changed(uri, doc, *change.lines())

    def change(self, uri: str, text: str, first: int | None = None, last: int | None = None,
               line_delta: int = 0) -> None:
        """The document's whole new text; `first`..`last`: the lines the edit now covers (None:
        whole text replaced), `line_delta`: lines it added (negative: removed)."""
        doc = self.documents.get(uri)
        if doc is None:
            return
        doc.buffer.set_text(text)
        self._changed(uri, doc, first, last, line_delta)

    def _changed(self, uri: str, doc: Document, first: int | None = None, last: int | None = None,
                 line_delta: int = 0) -> None:
        doc.version += 1
        self._changes += 1
        if first is None or last is None:
            return
        if line_delta:  # later edits of this document move with the text
            for index, edit in enumerate(self.edits):
                if edit.uri == uri and edit.first > first:
                    self.edits[index] = Edit(uri, max(first, edit.first + line_delta),
                                             max(first, edit.last + line_delta))
        previous = self.edits[-1] if self.edits else None
        if previous is not None and previous.uri == uri and previous.first - 2 <= last and first <= previous.last + 2:
            self.edits.pop()  # typing on: one range grows instead of many
            first, last = min(first, previous.first), max(last, previous.last)
        self.edits.append(Edit(uri, first, last))

    def close(self, uri: str) -> None:
        if self.documents.pop(uri, None) is not None:
            self._changes += 1
        self._blocks.pop(uri, None)
        self.edits = deque((edit for edit in self.edits if edit.uri != uri), maxlen=MAX_EDITS)

    # --- what the completion service asks -----------------------------------------------------
    def forbidden(self, uri: str, text: str) -> bool:
        """The current document is a secret: nothing of it may go into a prompt."""
        doc = self.documents.get(uri)
        if doc is not None and doc.secret_name:
            return True
        return "PRIVATE KEY" in text and text_problem(text) == "holds a private key"

    def cross_file(self, uri: str, text: str, offset: int, budget: int, counter: TokenCounter,
                   sources: Iterable[str] = SOURCES) -> RepoContext | None:
        """The other files' code for a prompt at `offset` of document `uri` (whose text is
        `text`), in at most `budget` tokens; None when there is none (or no workspace)."""
        doc = self.documents.get(uri)
        if doc is None or doc.location is None or budget < MIN_BUDGET:
            self.last_files, self.last_tokens = (), 0
            return None
        folder, _ = doc.location
        shape = (budget, tuple(sources), folder.path, id(counter))
        block = self._blocks.get(uri)
        near = block is not None and _lines_between(text, offset, block.anchor) <= FAR_LINES
        elsewhere = self._changes - doc.version
        if block is not None and block.shape == shape and near and \
                block.seen == elsewhere and doc.version - block.own < RECHECK_EDITS:
            return self._hand_out(block)
        block = self._reconsider(uri, doc, text, offset, near, shape, budget, counter, tuple(sources), block)
        block.seen, block.own = elsewhere, doc.version
        self._blocks[uri] = block
        return self._hand_out(block)

    def _hand_out(self, block: Block) -> RepoContext | None:
        self.last_files = tuple(dict.fromkeys(snippet.path for snippet in block.snippets))
        self.last_tokens = sum(snippet.tokens for snippet in block.snippets)
        return block.repo

    # --- building the block -----------------------------------------------------------------
    def _reconsider(self, uri: str, doc: Document, text: str, offset: int, near: bool, shape: tuple[object, ...],
                    budget: int, counter: TokenCounter, sources: tuple[str, ...], old: Block | None) -> Block:
        assert doc.location is not None
        folder, current_path = doc.location
        query = snippets.around(text, min(len(text), offset))
        python = doc.language == "python" or _suffix(doc) == ".py"
        wanted = imports.imported_names(text) if python else frozenset()
        found = self._sources(uri, doc, text, sources, folder)
        budget -= _count(counter, f"{folder.name}\n{current_path}\n") + 2  # repo_name and current file_sep
        ranked = self._rank(found, query, wanted, counter, budget)
        if old is not None and old.shape == shape and near and \
                all(_still_true(snippet, found) for snippet in old.snippets):
            kept = list(old.snippets)
            used = sum(snippet.tokens for snippet in kept)
            for snippet in ranked:  # append what is new and fits; the kept part stays byte-identical
                if len(kept) < MAX_SNIPPETS and used + snippet.tokens <= budget and \
                        not any(_overlaps(snippet, other) for other in kept) and \
                        sum(other.key == snippet.key for other in kept) < PER_FILE:
                    kept.append(snippet)
                    used += snippet.tokens
            if len(kept) == len(old.snippets):
                return old
            block = Block(shape, kept, old.anchor, 0, 0)
        else:
            block = Block(shape, list(reversed(ranked)), offset, 0, 0)  # the most similar nearest the cursor
        if block.snippets:
            block.repo = RepoContext(folder.name, current_path,
                                     tuple((snippet.path, snippet.text) for snippet in block.snippets))
        return block

    def _sources(self, uri: str, doc: Document, text: str, sources: tuple[str, ...],
                 folder: Folder) -> dict[str, Source]:
        """The files the block may use, by resolved path (deterministic order)."""
        found: dict[str, Source] = {}
        open_docs = sorted(((other_uri, other) for other_uri, other in self.documents.items()
                            if other_uri != uri and other.location is not None and other.location[0] == folder),
                           key=lambda item: -item[1].opened)[:MAX_OPEN]
        by_path = {_key(other): other for _, other in open_docs}
        if "open" in sources:
            for _, other in open_docs:
                self._add_document(found, other, doc.language)
        if "imports" in sources and doc.path is not None:
            for file in imports.imported_files(doc.path, text, doc.language, [folder.path]):
                opened = by_path.get(_resolved(file))
                if opened is not None:  # the editor's text is newer than the disk's
                    self._add_document(found, opened, doc.language)
                else:
                    self._add_disk(found, file, folder, doc)
        if "edits" in sources:
            for edit in self.edits:
                edited = self.documents.get(edit.uri)
                if edit.uri == uri or edited is None or edited.location is None or edited.location[0] != folder \
                        or not edited.admitted(self.guard):
                    continue
                lines, _ = edited.lines_and_windows()
                key = _key(edited)
                source = found.get(key) or Source(key, edited.location[1], lines, [], edited.language == doc.language)
                window = snippets.window_around(lines, edit.first, edit.last)
                found[key] = Source(source.key, source.path, source.lines, source.windows, source.same_language,
                                    (*source.edits, window))
        return found

    def _add_document(self, found: dict[str, Source], other: Document, language: str) -> None:
        if other.location is None or not other.admitted(self.guard):
            return
        key = _key(other)
        if key not in found:
            lines, windows = other.lines_and_windows()
            found[key] = Source(key, other.location[1], lines, windows, other.language == language)

    def _add_disk(self, found: dict[str, Source], file: Path, folder: Folder, doc: Document) -> None:
        location = self.guard.relative(file)
        if location is None or location[0] != folder:
            return
        key = _resolved(file)
        if key in found or key == _key(doc):
            return
        try:
            stat = os.stat(file)
        except OSError as err:
            log.info("cross-file context: cannot read %s: %s", file, err)
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._disk.get(file)
        if cached is None or cached.stamp != stamp:
            text = self.guard.read(file)
            lines = snippets.split_lines(text) if text is not None else None
            cached = _DiskFile(stamp, lines, snippets.windows(lines) if lines else [])
            self._disk[file] = cached
        if cached.lines is not None:
            found[key] = Source(key, location[1], cached.lines, cached.windows, file.suffix == _suffix(doc))

    def _rank(self, found: dict[str, Source], query: frozenset[str], wanted: frozenset[str],
              counter: TokenCounter, budget: int) -> list[Snippet]:
        """The windows worth sending, best first, within `budget` tokens."""
        scored: list[tuple[bool, float, str, int, Source, snippets.Window]] = []
        for source in found.values():
            for window in source.windows:
                score = snippets.jaccard(window.ids, query) + (DEFINES_BONUS if window.defines & wanted else 0.0)
                if score > 0:
                    scored.append((not source.same_language, -score, source.path, window.start, source, window))
            for window in source.edits:  # a recent edit counts even when its words differ
                score = snippets.jaccard(window.ids, query) + 1.0 + (DEFINES_BONUS if window.defines & wanted else 0.0)
                scored.append((not source.same_language, -score, source.path, window.start, source, window))
        scored.sort(key=lambda item: item[:4])
        chosen: list[Snippet] = []
        used = 0
        for *_, source, window in scored:
            if len(chosen) >= MAX_SNIPPETS or budget - used < MIN_BUDGET:
                break
            snippet = Snippet(source.key, source.path, window.start, window.end, "", 0)
            if any(_overlaps(snippet, other) for other in chosen) or \
                    sum(other.key == source.key for other in chosen) >= PER_FILE:
                continue
            tokens = sum(counter.count_lines(source.lines[window.start:window.end])) + \
                _count(counter, source.path + "\n") + 2
            if used + tokens <= budget:
                chosen.append(Snippet(source.key, source.path, window.start, window.end,
                                      "".join(source.lines[window.start:window.end]), tokens))
                used += tokens
        return chosen

    def _locate(self, path: Path | None) -> tuple[Folder, str] | None:
        return self.guard.relative(path) if path is not None else None


def _key(doc: Document) -> str:
    return doc.key


def _resolved(path: Path) -> str:
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):  # a link loop
        return str(path)


def _suffix(doc: Document) -> str:
    return doc.path.suffix if doc.path is not None else ""


def _count(counter: TokenCounter, text: str) -> int:
    return sum(counter.count_lines(snippets.split_lines(text)))


def _lines_between(text: str, a: int, b: int) -> int:
    """Line breaks between two offsets (counting only that stretch keeps a keystroke cheap)."""
    return text.count("\n", min(a, b), max(a, b))


def _overlaps(a: Snippet, b: Snippet) -> bool:
    return a.key == b.key and a.start < b.end and b.start < a.end


def _still_true(snippet: Snippet, found: dict[str, Source]) -> bool:
    source = found.get(snippet.key)
    return source is not None and "".join(source.lines[snippet.start:snippet.end]) == snippet.text
