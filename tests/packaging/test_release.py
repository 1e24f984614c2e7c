"""Release artifacts: scripts/build-release makes the wheel, the sdist and a VSIX carrying the wheel.

The slow test builds them from a clean clone with only Python (3.10 where the machine has it) and
Node, no test venv, vLLM or test model (tests/conftest.py's `release`), and installs the wheel in a
fresh venv as a user would. The `[gpu]` extra is
checked without installing it (vLLM pulls a CUDA torch of several GB): the wheel declares it, and the
index has a vLLM release for this Python and platform that satisfies it.
"""

from __future__ import annotations

import email
import hashlib
import json
import os
import re
import subprocess
import zipfile
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

from tests.conftest import Release

ROOT = Path(__file__).resolve().parents[2]


def versions() -> tuple[str, str]:
    python = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    node = json.loads((ROOT / "vscode-client" / "package.json").read_text())["version"]
    return python, node


def archive_text(path: Path, name: str) -> str:
    with zipfile.ZipFile(path) as archive:
        return archive.read(name).decode()


def test_one_version_for_the_server_and_the_extension() -> None:
    python, node = versions()
    assert python == node, f"pyproject.toml has {python}, vscode-client/package.json has {node}"


@pytest.mark.slow
@pytest.mark.vscode  # builds the VSIX: Node, vsce and the extension's npm deps (scripts/setup-vscode-test)
def test_build_release_artifacts_install_and_pass_the_checks(release: Release, tmp_path: Path) -> None:
    dist = release.dist
    version = versions()[0]
    wheel = dist / f"vllm_ghost-{version}-py3-none-any.whl"
    sdist = dist / f"vllm_ghost-{version}.tar.gz"
    vsix = dist / f"vllm-ghost-{version}.vsix"
    assert wheel.is_file() and sdist.is_file() and vsix.is_file(), sorted(p.name for p in dist.iterdir())
    assert "checks passed" in release.log and '"ovsx":' in release.log
    # Built without the developer toolchain: the clone never got a test venv, vLLM or the test model.
    assert not (release.clone / ".venv").exists()
    assert not list((release.clone / ".cache").glob("test-model*"))

    # The wheel in a fresh venv: the command runs, doctor included.
    venv = tmp_path / "venv"
    subprocess.run([release.python, "-m", "venv", str(venv)], check=True, timeout=120)  # 3.10 where found
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                          str(wheel)], capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-3000:]
    helped = subprocess.run([str(venv / "bin" / "vllm-ghost"), "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "doctor" in helped.stdout and "complete" in helped.stdout, helped.stderr
    fitted = subprocess.run([str(venv / "bin" / "vllm-ghost"), "doctor", "--gpu-json"], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "VLLM_GHOST_NVIDIA_SMI": "/nonexistent"})
    assert fitted.returncode == 0 and json.loads(fitted.stdout)["plan"]["fits"] is None, fitted.stderr

    # [gpu]: declared, and a vLLM for this Python/platform on the index satisfies it.
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.message_from_bytes(archive.read(f"vllm_ghost-{version}.dist-info/METADATA"))
    assert "gpu" in metadata.get_all("Provides-Extra", [])
    gpu = [Requirement(line) for line in metadata.get_all("Requires-Dist", []) if 'extra == "gpu"' in line]
    assert [req.name for req in gpu] == ["vllm"], gpu
    index = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "index", "versions", "vllm"],
                           capture_output=True, text=True, timeout=120)
    latest = re.search(r"^vllm \(([^)]+)\)", index.stdout, re.MULTILINE)
    assert latest, index.stdout + index.stderr
    assert gpu[0].specifier.contains(Version(latest.group(1))), (gpu[0], latest.group(1))

    # The VSIX: the bundled extension and exactly this wheel.
    with zipfile.ZipFile(vsix) as archive:
        names = archive.namelist()
        bundled = archive.read(f"extension/server/{wheel.name}")
        manifest = json.loads(archive.read("extension/package.json"))
        vsixmanifest = archive.read("extension.vsixmanifest").decode()
    assert "extension/dist/extension.js" in names
    assert hashlib.sha256(bundled).hexdigest() == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert manifest["version"] == version and manifest["license"] == "MIT"
    # What the Marketplace and Open VSX show: licence file, icon, repository.
    licence = next(name for name in names if name.lower() == "extension/license.txt")  # vsce's own spelling
    assert "MIT License" in archive_text(vsix, licence)
    assert f"extension/{manifest['icon']}" in names and manifest["repository"]["url"].startswith("https://")
    assert "TargetPlatform" not in vsixmanifest  # platform-neutral
    assert not [name for name in names if "node_modules" in name]
    assert metadata["License-Expression"] == "MIT" and metadata.get_all("Project-URL")
    sums = (dist / "SHA256SUMS").read_text()
    assert hashlib.sha256(vsix.read_bytes()).hexdigest() in sums
