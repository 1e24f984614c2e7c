"""The VS Code client's unit tests (node's test runner, `npm test` in vscode-client/) and the
check that its package.json mirrors the server's settings schema."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import pytest

from langserver.settings import _RANGES, Settings, camel, to_wire

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "vscode-client"
ENV_FILE = ROOT / ".cache" / "vscode-test" / "env.json"
PROPERTIES: dict[str, dict[str, Any]] = json.loads((CLIENT / "package.json").read_text())["contributes"][
    "configuration"]["properties"]


@pytest.mark.vscode
def test_client_unit_tests_pass() -> None:
    if not ENV_FILE.is_file():
        pytest.fail(f"{ENV_FILE} is missing: run scripts/setup-vscode-test (scripts/test does)")
    node_bin = json.loads(ENV_FILE.read_text())["nodeBin"]
    env = {**os.environ, "PATH": node_bin + os.pathsep + os.environ.get("PATH", "")}
    run = subprocess.run(["npm", "test", "--silent"], cwd=CLIENT, env=env, capture_output=True, text=True, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-5000:]
    assert "fail 0" in output, output[-5000:]


def server_keys() -> dict[str, Any]:
    """`vllmGhost.<section>.<camelKey>` (nested objects too: `completion.crossFile.enabled`) -> the
    server's default, from langserver/settings.py."""

    def flatten(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in values.items():
            nested = isinstance(value, dict) and key not in ("env",)
            out.update(flatten(f"{prefix}.{key}", value) if nested else {f"{prefix}.{key}": value})
        return out

    return flatten("vllmGhost", to_wire(Settings()))


def test_package_json_has_every_server_setting_and_no_other() -> None:
    client = {name for name in PROPERTIES if not name.startswith("vllmGhost.server.")}
    assert client == set(server_keys())
    assert PROPERTIES["vllmGhost.server.command"]["default"] == []


@pytest.mark.parametrize("name", sorted(server_keys()))
def test_package_json_default_matches_the_server(name: str) -> None:
    assert PROPERTIES[name]["default"] == server_keys()[name]
    assert PROPERTIES[name].get("description") or PROPERTIES[name].get("markdownDescription")


def field_types() -> dict[str, Any]:
    types: dict[str, Any] = {}

    def add(prefix: str, cls: Any) -> None:
        for name, hint in get_type_hints(cls).items():
            if dataclasses.is_dataclass(hint):
                add(f"{prefix}.{camel(name)}", hint)
            else:
                types[f"{prefix}.{camel(name)}"] = hint

    for section in dataclasses.fields(Settings):
        add(section.name, section.default_factory)
    return types


@pytest.mark.parametrize("path", sorted(field_types()))
def test_package_json_types_enums_and_ranges_match_the_server(path: str) -> None:
    hint = field_types()[path]
    prop = PROPERTIES[f"vllmGhost.{path}"]
    if get_origin(hint) is Literal:
        assert prop["type"] == "string" and prop["enum"] == list(get_args(hint))
    elif hint is bool:
        assert prop["type"] == "boolean"
    elif hint is int:
        assert prop["type"] == "integer"
    elif hint is float:
        assert prop["type"] == "number"
    elif hint is str:
        assert prop["type"] == "string"
    elif get_origin(hint) is tuple:
        assert prop["type"] == "array" and prop["items"] == {"type": "string"}
    elif get_origin(hint) is dict:
        assert prop["type"] == "object"
    else:  # pragma: no cover - a new kind of setting
        pytest.fail(f"unhandled type {hint!r}")
    if path in _RANGES:
        low, high = _RANGES[path]
        assert (prop.get("minimum"), prop.get("maximum")) == (low, high)
