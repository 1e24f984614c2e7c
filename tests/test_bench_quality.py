"""The scripted-noise quality benchmark on a small spread-out subset: no damage, every noisy mode
recovered. (The model benchmark, `--model`, is tests/test_quality_model.py.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "humaneval-infilling"


@pytest.mark.skipif(not DATA.is_dir(), reason="HumanEval-infilling data not beside the repository")
def test_bench_quality_subset_meets_the_targets() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench-quality"), "--limit", "12", "--jobs", "2"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    output = result.stdout
    assert "Ablation" in output, result.stderr
    assert re.findall(r"(Single-line|Multi-line): damage (\d+)", output) == [("Single-line", "0"), ("Multi-line", "0")]
    main_table = output.split("Ablation")[0]
    # Every mode (a role header and a line break first included) on both splits, at both cuts:
    # after the indentation and inside the line, through the streaming path.
    recovered = [float(value) for value in re.findall(r"-> +([\d.]+)%", main_table)]
    assert len(recovered) == 4 * 14, output
    assert min(recovered) >= 95.0, output
    assert "targets (damage 0, every mode >= 95% recovered on both splits and cuts): met" in output
    assert result.returncode == 0
