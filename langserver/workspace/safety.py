"""What may go into a prompt from the workspace: the rules every source obeys.

A file is admitted only when it lies inside one of the workspace folders the client
named (after resolving links, so a link cannot lead out), is not ignored by the
workspace's .gitignore files, is not a secret by name (`.env*`, `*.pem`, `*.key`,
`id_rsa*`) or by content (a `PRIVATE KEY` header), is not binary (a NUL byte) or
non-UTF-8, and is not oversized. Open documents obey the same rules as files read
from disk: the client may have a `.env` open, and it must never reach a prompt.
A file that cannot be read is logged and skipped; it never costs a completion.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pathspec

log = logging.getLogger("vllm-ghost")

# Larger files are generated or data, not code a completion learns from, and cost a read each.
MAX_FILE_BYTES = 512 * 1024
SECRET_NAMES = (".env*", "*.pem", "*.key", "id_rsa*")
PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")


def is_secret_name(path: str | Path) -> bool:
    name = Path(path).name
    return any(fnmatch.fnmatchcase(name.lower(), pattern) for pattern in SECRET_NAMES)


def text_problem(text: str) -> str | None:
    """Why this text must not go into a prompt, or None."""
    if len(text) > MAX_FILE_BYTES:
        return "oversized"
    if "\0" in text:
        return "binary"
    if "PRIVATE KEY" in text and PRIVATE_KEY.search(text):
        return "holds a private key"
    return None


@dataclass(frozen=True)
class Folder:
    name: str  # the repository name in the prompt
    path: Path  # resolved


class Guard:
    """The workspace folders and the rules for what may be read from them."""

    def __init__(self, folders: list[str] | None = None) -> None:
        self.folders: tuple[Folder, ...] = ()
        # .gitignore path -> (mtime_ns, spec); a changed file is read again.
        self._ignores: dict[Path, tuple[int, pathspec.GitIgnoreSpec | None]] = {}
        self.set_folders(folders or [])

    def set_folders(self, paths: list[str]) -> None:
        folders: list[Folder] = []
        for raw in paths:
            try:
                path = Path(raw).resolve()
            except (OSError, RuntimeError) as err:
                log.warning("workspace folder %s: %s; not used for context", raw, err)
                continue
            if path.is_dir() and path != Path(path.anchor):  # never the whole file system
                folders.append(Folder(path.name, path))
        # Deepest first: a file in a nested folder belongs to the nested one.
        self.folders = tuple(sorted(folders, key=lambda folder: -len(folder.path.parts)))
        self._ignores.clear()

    def folder_of(self, path: str | Path) -> tuple[Folder, Path] | None:
        """The folder holding `path` and the resolved path, or None when outside every folder
        (links are followed first, so a link out of the workspace is outside)."""
        try:
            resolved = Path(path).resolve()
        except (OSError, RuntimeError):  # a link loop
            return None
        for folder in self.folders:
            if resolved.is_relative_to(folder.path):
                return folder, resolved
        return None

    def relative(self, path: str | Path) -> tuple[Folder, str] | None:
        """Folder and the path relative to it as the prompt shows it, for an admitted location."""
        found = self.folder_of(path)
        if found is None:
            return None
        folder, resolved = found
        return folder, resolved.relative_to(folder.path).as_posix()

    def location_problem(self, path: str | Path) -> str | None:
        """Why a file at `path` may not be used whatever it holds, or None."""
        found = self.folder_of(path)
        if found is None:
            return "outside the workspace folders"
        folder, resolved = found
        if is_secret_name(path) or is_secret_name(resolved):
            return "a secret by its name"
        relative = resolved.relative_to(folder.path)
        if ".git" in relative.parts:
            return "inside .git"
        if self._ignored(folder.path, relative):
            return "ignored by .gitignore"
        return None

    def admits(self, path: str | Path, text: str) -> bool:
        """Whether an open document may go into a prompt."""
        problem = self.location_problem(path) or text_problem(text)
        if problem:
            log.debug("cross-file context: skipping %s (%s)", path, problem)
        return problem is None

    def read(self, path: str | Path) -> str | None:
        """The text of a workspace file on disk, or None when a rule forbids it or it cannot be read."""
        problem = self.location_problem(path)
        if problem is None:
            try:
                resolved = Path(path).resolve()
                if resolved.stat().st_size > MAX_FILE_BYTES:
                    problem = "oversized"
                else:
                    text = resolved.read_bytes().decode("utf-8")
                    problem = text_problem(text)
                    if problem is None:
                        return text
            except UnicodeDecodeError:
                problem = "not UTF-8"
            except OSError as err:
                log.info("cross-file context: cannot read %s: %s", path, err)
                return None
        log.debug("cross-file context: skipping %s (%s)", path, problem)
        return None

    def _ignored(self, root: Path, relative: Path) -> bool:
        """Whether a .gitignore in `root` or a folder between it and the file ignores the file."""
        directory = root
        parts = relative.parts
        for depth in range(len(parts)):
            spec = self._spec(directory / ".gitignore")
            if spec is not None and spec.match_file("/".join(parts[depth:])):
                return True
            directory = directory / parts[depth]
        return False

    def _spec(self, path: Path) -> pathspec.GitIgnoreSpec | None:
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            return None
        cached = self._ignores.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        try:
            spec: pathspec.GitIgnoreSpec | None = pathspec.GitIgnoreSpec.from_lines(
                path.read_text(encoding="utf-8", errors="replace").splitlines())
        except (OSError, ValueError) as err:
            log.info("cross-file context: cannot read %s: %s", path, err)
            spec = None
        self._ignores[path] = (mtime, spec)
        return spec
