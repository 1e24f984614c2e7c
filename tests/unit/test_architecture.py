"""The package rules of docs/architecture.md, read from the code: who may import whom inside
`langserver`, and that only server.py knows LSP types. An import that breaks a rule fails here
(in the fast loop) with the file, the line and the rule."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "langserver"
STAGES = "langserver.completion.stages"
POSTPROCESS = "langserver.completion.postprocess"
PIPELINE = "langserver.completion.pipeline"
SERVING = "langserver.completion.serving"
DATA = "langserver.backend.request"  # the one backend module completion/ may see: the request and delta types
# Each unit (a package or a module) and what it may import besides itself. Read top to bottom:
# a unit only imports units above it, so there is no circle.
RULES: dict[str, frozenset[str]] = {
    "langserver": frozenset(),  # the package's __init__ (its version) only
    "langserver.settings": frozenset(),
    "langserver.document": frozenset(),
    "langserver.backend": frozenset({"langserver.settings"}),
    STAGES: frozenset({DATA, "langserver.settings"}),
    POSTPROCESS: frozenset({STAGES}),
    PIPELINE: frozenset({STAGES, POSTPROCESS, DATA, "langserver.settings"}),
    SERVING: frozenset({PIPELINE, STAGES, POSTPROCESS, DATA, "langserver.settings"}),
    "langserver.completion": frozenset(),  # its __init__; a new module belongs in one of the packages above
    "langserver.workspace": frozenset({STAGES, "langserver.document"}),
    "langserver.doctor": frozenset({"langserver.backend", "langserver.settings"}),
    "langserver.server": frozenset({"langserver.backend", "langserver.completion", "langserver.document",
                                    "langserver.settings", "langserver.workspace"}),
    "langserver.cli": frozenset({"langserver.backend", "langserver.completion", "langserver.doctor",
                                 "langserver.server", "langserver.settings", "langserver.workspace"}),
    "langserver.__main__": frozenset({"langserver.cli"}),
}
# `from langserver import __version__`: the package's own __init__ holds nothing else.
ANYONE = frozenset({"langserver"})
LSP_LIBRARIES = ("lsprotocol", "pygls")
LSP_OWNER = "langserver.server"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str | None:
    """The rule that governs `module`: the longest unit it is or lies inside."""
    found = [unit for unit in RULES if module == unit or (unit != "langserver" and module.startswith(unit + "."))]
    return max(found, key=len) if found else None


def within(target: str, allowed: frozenset[str]) -> bool:
    return any(target == unit or target.startswith(unit + ".") for unit in allowed)


def imports(module: str, source: str) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import of `source`; `from a import b` names a.b when
    that is a module of ours, else a."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (ROOT / candidate.replace(".", "/")).with_suffix(".py").exists() or \
                    (ROOT / candidate.replace(".", "/") / "__init__.py").exists()
                yield node.lineno, candidate if is_module else node.module


def violations(module: str, source: str) -> list[str]:
    unit = unit_of(module)
    found: list[str] = []
    if unit is None:
        return [f"{module}: in no unit of RULES (add it to the table and to docs/architecture.md)"]
    for line, target in imports(module, source):
        if target.split(".")[0] in LSP_LIBRARIES and unit != LSP_OWNER:
            found.append(f"{module}:{line} imports {target}: only {LSP_OWNER} knows LSP types")
        if not target.startswith("langserver") or target in ANYONE:
            continue
        if unit_of(target) == unit or within(target, RULES[unit]):
            continue
        found.append(f"{module}:{line} imports {target}: {unit} may import only {sorted(RULES[unit])}")
    return found


def test_every_import_in_langserver_keeps_the_package_rules() -> None:
    found = [problem for path in sorted(PACKAGE.rglob("*.py"))
             for problem in violations(module_name(path), path.read_text(encoding="utf-8"))]
    assert found == []


def test_a_circle_or_an_lsp_import_outside_the_server_is_caught() -> None:
    # What the rules exist for: completion/ reaching back into the workspace that imports it,
    # a stage depending on the concrete backend manager, a clean-up step importing lsprotocol.
    assert violations(f"{SERVING}.service", "from langserver.workspace import Workspace\n") == \
        [f"{SERVING}.service:1 imports langserver.workspace: {SERVING} may import only "
         f"{sorted(RULES[SERVING])}"]
    assert len(violations(f"{STAGES}.stream", "from langserver.backend.manager import BackendManager\n")) == 1
    assert "only langserver.server knows LSP types" in \
        violations(f"{POSTPROCESS}.fence", "from lsprotocol import types\n")[0]


def test_the_rules_have_no_circle() -> None:
    order = list(RULES)
    for position, unit in enumerate(order):
        for allowed in RULES[unit]:
            governing = unit_of(allowed)
            assert governing is not None and order.index(governing) < position, (unit, allowed)
