"""scripts/check-space, which a first scripts/test and scripts/setup run before writing GBs: a
disk too full for the install stops it with the numbers and the fix, not pip's bare OSError."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def check(need_gb: int, *dirs: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / "scripts" / "check-space"), str(need_gb), "a first install", *map(str, dirs)],
                          capture_output=True, text=True, timeout=30)


def test_a_disk_without_room_stops_with_what_is_needed_and_what_there_is(tmp_path: Path) -> None:
    result = check(10**9, tmp_path)
    assert result.returncode == 1
    assert "a first install needs about 1000000000 GB free on" in result.stderr
    assert "it has" in result.stderr and "Free some space" in result.stderr


def test_a_disk_with_room_goes_on_quietly(tmp_path: Path) -> None:
    result = check(0, tmp_path)
    assert result.returncode == 0
    assert result.stderr == ""


def test_one_file_system_is_reported_once(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    result = check(10**9, tmp_path, tmp_path / "a")
    assert result.stderr.count("needs about") == 1
