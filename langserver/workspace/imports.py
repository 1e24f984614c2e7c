"""Files the current file imports, among the workspace's files.

Python: `import a.b`, `from a.b import c` (c may be a submodule) and package-relative
`from .a import b` / `from .. import c`, resolved against the workspace folders, their
`src/`, and the root of the package the current file lies in. The text is scanned
line by line (the file being typed need not parse). Other languages: the files of the
same folder with the same extension, as a start.
Only paths are found here; whether a file may be read is safety.py's to say.
"""

from __future__ import annotations

import re
from pathlib import Path

# At most this many files per current file: the selection ranks windows of all of them.
MAX_FILES = 24
_IMPORT = re.compile(
    r"^[ \t]*(?:from[ \t]+(?P<dots>\.*)(?P<module>[\w.]*)[ \t]+import[ \t]+(?P<names>[^\n#;]*)"
    r"|import[ \t]+(?P<modules>[^\n#;]*))",
    re.MULTILINE,
)
_NAME = re.compile(r"^[A-Za-z_]\w*$")


def imported_files(path: Path, text: str, language: str, roots: list[Path]) -> list[Path]:
    """Existing files `path` (with content `text`) imports, in the order of its imports."""
    if language == "python" or path.suffix in (".py", ".pyi"):
        found = _python_imports(path, text, roots)
    else:
        found = _same_folder(path)
    return list(dict.fromkeys(found))[:MAX_FILES]


def _same_folder(path: Path) -> list[Path]:
    try:
        siblings = sorted(entry for entry in path.parent.iterdir()
                          if entry.suffix == path.suffix and entry.name != path.name and entry.is_file())
    except OSError:
        return []
    return siblings


def _python_imports(path: Path, text: str, roots: list[Path]) -> list[Path]:
    search = [*roots, *(root / "src" for root in roots)]
    package_root = _package_root(path.parent)
    if package_root is not None:
        search.insert(0, package_root)
    found: list[Path] = []
    for match in _import_lines(text):
        if match.group("modules") is not None:
            for part in match.group("modules").split(","):
                module = part.split(" as ")[0].strip()
                found += _resolve_absolute(module, search)
            continue
        dots, module = match.group("dots"), match.group("module")
        names = [name.split(" as ")[0].strip() for name in match.group("names").strip("() \t\\").split(",")]
        names = [name for name in names if _NAME.match(name)]
        if dots:
            base = path.parent
            for _ in range(len(dots) - 1):
                base = base.parent
            found += _resolve_in(base, module, names)
        else:
            for root in search:
                found += _resolve_in(root, module, names)
    return found


def imported_names(text: str) -> frozenset[str]:
    """The names a Python file imports with `from ... import a, b as c` (a and b: what it uses of
    other modules, whose definitions the selection favours)."""
    names: set[str] = set()
    for match in _import_lines(text):
        if match.group("names") is not None:
            names.update(name.split(" as ")[0].strip() for name in match.group("names").strip("() \t\\").split(","))
    return frozenset(name for name in names if _NAME.match(name))


def _import_lines(text: str) -> list[re.Match[str]]:
    """The import statements' matches, found from the word "import" (rare) instead of running the
    statement pattern at every line start: a 6,000-line file costs well under a millisecond."""
    matches: list[re.Match[str]] = []
    position = text.find("import")
    while position != -1:
        start = text.rfind("\n", 0, position) + 1
        end = text.find("\n", position)
        end = len(text) if end == -1 else end
        match = _IMPORT.match(text, start, end)
        if match is not None:
            matches.append(match)
        position = text.find("import", end)
    return matches


def _package_root(directory: Path) -> Path | None:
    """The folder that holds the top package `directory` belongs to (where `import top` works)."""
    if not (directory / "__init__.py").is_file():
        return None
    while (directory.parent / "__init__.py").is_file() and directory.parent != directory:
        directory = directory.parent
    return directory.parent


def _resolve_absolute(module: str, roots: list[Path]) -> list[Path]:
    for root in roots:
        found = _module_file(root, module)
        if found is not None:
            return [found]
    return []


def _resolve_in(base: Path, module: str, names: list[str]) -> list[Path]:
    """`from <module> import <names>` relative to `base`: the module, and names that are submodules."""
    found: list[Path] = []
    target = _module_file(base, module) if module else None
    if target is not None and target.name != "__init__.py":
        return [target]
    if target is not None:
        found.append(target)
    package = base.joinpath(*module.split(".")) if module else base
    for name in names:
        submodule = _module_file(package, name)
        if submodule is not None:
            found.append(submodule)
    return found


def _module_file(base: Path, module: str) -> Path | None:
    if not module or not all(_NAME.match(part) for part in module.split(".")):
        return None
    stem = base.joinpath(*module.split("."))
    for candidate in (stem.with_name(stem.name + ".py"), stem / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None
